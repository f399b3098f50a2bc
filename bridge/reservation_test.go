package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// yamlConfig loads a test config from YAML, listening on a free port,
// against the private broker node (yaml must not have amqp.urls).
func yamlConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Load([]byte("listen: 127.0.0.1:0\nmetrics_listen: \"\"\n" + yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.AMQP.URLs = []config.URL{config.URL(testbroker.URL)}
	return cfg
}

// TestDisconnectRequeues: a worker that dies never acked, so its message
// goes back and the next worker gets it.
func TestDisconnectRequeues(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	a := g.dial()
	a.Do("set "+q+" 0 0 3\r\njob\r\n", "STORED\r\n")
	a.Do("get "+q+"\r\n", "VALUE "+q+" 0 3\r\njob\r\nEND\r\n")
	b := g.dial()
	b.Do("get "+q+"\r\n", "END\r\n")
	a.Close()
	testbroker.Eventually(t, 5*time.Second, "the message back in the queue", func() bool {
		b.Send("get " + q + "\r\n")
		return b.Line() != "END" // VALUE line; read the rest below
	})
	b.Expect("job\r\nEND\r\n")
	b.Do("delete "+q+"\r\n", "DELETED\r\n")
}

// TestLeaseExpires: a reservation not acked within reservation_timeout goes
// back to the queue, and the late delete is NOT_FOUND.
func TestLeaseExpires(t *testing.T) {
	q := testbroker.Name(t, "q")
	cfg := yamlConfig(t, fmt.Sprintf("queues:\n  - name: %s\n    reservation_timeout: 300ms\n", q))
	g := startGateway(t, cfg)
	a, b := g.dial(), g.dial()
	a.Do("set "+q+" 0 0 1\r\nm\r\n", "STORED\r\n")
	start := time.Now()
	a.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nm\r\nEND\r\n")
	testbroker.Eventually(t, 5*time.Second, "the expired reservation back in the queue", func() bool {
		b.Send("get " + q + "\r\n")
		return b.Line() != "END"
	})
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("requeued after %v, before the 300ms lease", d)
	}
	b.Expect("m\r\nEND\r\n")
	a.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
	b.Do("delete "+q+"\r\n", "DELETED\r\n")
}

// TestTouch: touch extends the lease; a negative touch requeues now.
func TestTouch(t *testing.T) {
	q := testbroker.Name(t, "q")
	cfg := yamlConfig(t, fmt.Sprintf("queues:\n  - name: %s\n    reservation_timeout: 200ms\n", q))
	g := startGateway(t, cfg)
	a, b := g.dial(), g.dial()
	a.Do("set "+q+" 0 0 1\r\nm\r\n", "STORED\r\n")
	a.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nm\r\nEND\r\n")
	a.Do("touch "+q+" 30\r\n", "TOUCHED\r\n")
	// Well past the queue's 200ms lease the message is still held.
	until := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(until) {
		b.Do("get "+q+"\r\n", "END\r\n")
	}
	a.Do("touch "+q+" -1\r\n", "TOUCHED\r\n")
	a.Do("touch "+q+" 30\r\n", "NOT_FOUND\r\n")
	a.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
	b.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nm\r\nEND\r\n")
	b.Do("touch "+q+" 0 noreply\r\n", "")
	b.Do("delete "+q+"\r\n", "DELETED\r\n")
}

// TestGat: gat reserves with the given lease.
func TestGat(t *testing.T) {
	q := testbroker.Name(t, "q")
	g := startGateway(t, nil)
	a, b := g.dial(), g.dial()
	a.Do("set "+q+" 5 0 1\r\nm\r\n", "STORED\r\n")
	a.Do("set "+q+" 6 0 1\r\nn\r\n", "STORED\r\n")
	// A one-second lease: the message comes back by itself.
	a.Do("gat 1 "+q+"\r\n", "VALUE "+q+" 5 1\r\nm\r\nEND\r\n")
	b.Do("gat 0 "+q+"\r\n", "VALUE "+q+" 6 1\r\nn\r\nEND\r\n")
	testbroker.Eventually(t, 5*time.Second, "the gat lease to end", func() bool {
		c := g.dial()
		defer c.Close()
		c.Send("get " + q + "\r\n")
		if c.Line() == "END" {
			return false
		}
		c.Expect("m\r\nEND\r\n")
		c.Do("delete "+q+"\r\n", "DELETED\r\n")
		return true
	})
	b.Send("gats 0 " + q + "\r\n")
	b.Expect("END\r\n") // b holds n already
	b.Do("delete "+q+"\r\n", "DELETED\r\n")
}

// TestAutoAck: an ack: auto queue behaves like memcacheq: get is
// destructive and delete has nothing to ack.
func TestAutoAck(t *testing.T) {
	q := testbroker.Name(t, "q")
	cfg := yamlConfig(t, fmt.Sprintf("queues:\n  - name: %s\n    ack: auto\n", q))
	g := startGateway(t, cfg)
	a := g.dial()
	a.Do("set "+q+" 0 0 1\r\n1\r\n", "STORED\r\n")
	a.Do("set "+q+" 0 0 1\r\n2\r\n", "STORED\r\n")
	a.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\n1\r\nEND\r\n")
	// No reservation: the next get on the same connection is a hit.
	a.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\n2\r\nEND\r\n")
	a.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
	a.Close()
	b := g.dial()
	b.Do("get "+q+"\r\n", "END\r\n")
	ch := testbroker.Channel(t)
	testbroker.Eventually(t, 5*time.Second, "the acks to reach the broker", func() bool {
		qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		return err == nil && qi.Messages == 0
	})
}

// TestKestrelOptions covers /open, /close, /close/open, /abort and /peek.
func TestKestrelOptions(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	a, b := g.dial(), g.dial()
	for _, m := range []string{"1", "2", "3"} {
		a.Do("set "+q+" 0 0 1\r\n"+m+"\r\n", "STORED\r\n")
	}
	// peek shows the head and keeps nothing.
	a.Do("get "+q+"/peek\r\n", "VALUE "+q+"/peek 0 1\r\n1\r\nEND\r\n")
	a.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
	// open reserves, echoing the key as sent.
	a.Do("get "+q+"/open\r\n", "VALUE "+q+"/open 0 1\r\n1\r\nEND\r\n")
	// close/open acks 1 and reserves 2.
	a.Do("get "+q+"/close/open\r\n", "VALUE "+q+"/close/open 0 1\r\n2\r\nEND\r\n")
	// abort puts 2 back. (Which of 2 and 3 comes next is not promised:
	// the gateway may have prefetched 3 while 2 went back to the broker.)
	a.Do("get "+q+"/abort\r\n", "END\r\n")
	a.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
	b.Send("get " + q + "/open\r\n")
	first := b.Line()
	if first != "VALUE "+q+"/open 0 1" {
		t.Fatalf("get /open: %q", first)
	}
	x := b.Line()
	b.Expect("END\r\n")
	// close acks it; nothing follows.
	b.Do("get "+q+"/close\r\n", "END\r\n")
	b.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
	b.Send("get " + q + "\r\n")
	if l := b.Line(); l != "VALUE "+q+" 0 1" {
		t.Fatalf("get: %q", l)
	}
	y := b.Line()
	b.Expect("END\r\n")
	if !(x == "2" && y == "3" || x == "3" && y == "2") {
		t.Fatalf("after the abort got %q then %q, want 2 and 3", x, y)
	}
	b.Do("delete "+q+"\r\n", "DELETED\r\n")
	b.Do("get "+q+"/peek\r\n", "END\r\n")
}

// TestWaitOption: /t=<ms> waits for a message, returning as soon as one
// arrives, or a miss after the timeout.
func TestWaitOption(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	a, b := g.dial(), g.dial()
	a.Do("get "+q+"\r\n", "END\r\n") // declares the queue
	start := time.Now()
	a.Do("get "+q+"/t=300\r\n", "END\r\n")
	if d := time.Since(start); d < 280*time.Millisecond {
		t.Fatalf("/t=300 miss after %v", d)
	}
	a.Send("get " + q + "/t=10000\r\n")
	start = time.Now()
	b.Do("set "+q+" 0 0 1\r\nw\r\n", "STORED\r\n")
	a.Expect("VALUE " + q + "/t=10000 0 1\r\nw\r\nEND\r\n")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("/t= returned %v after the set", d)
	}
	a.Do("delete "+q+"\r\n", "DELETED\r\n")
}

// TestMaxReservationsPerConnection: past the cap, gets miss until one is
// acked.
func TestMaxReservationsPerConnection(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxReservationsPerConnection = 2
	g := startGateway(t, cfg)
	q1, q2, q3 := testbroker.Name(t, "a"), testbroker.Name(t, "b"), testbroker.Name(t, "c")
	c := g.dial()
	for _, q := range []string{q1, q2, q3} {
		c.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")
	}
	c.Do("get "+q1+"\r\n", "VALUE "+q1+" 0 1\r\nx\r\nEND\r\n")
	c.Do("get "+q2+"\r\n", "VALUE "+q2+" 0 1\r\nx\r\nEND\r\n")
	c.Do("get "+q3+"\r\n", "END\r\n")
	c.Do("delete "+q1+"\r\n", "DELETED\r\n")
	c.Do("get "+q3+"\r\n", "VALUE "+q3+" 0 1\r\nx\r\nEND\r\n")
}

// TestNoAutoDeclare: with auto_declare off, unknown keys are not stored and
// read as misses, and no queue is created.
func TestNoAutoDeclare(t *testing.T) {
	cfg := yamlConfig(t, "auto_declare: {enabled: false}\n")
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "q")
	c := g.dial()
	c.Do("set "+q+" 0 0 1\r\nx\r\n", "NOT_STORED\r\n")
	c.Do("get "+q+"\r\n", "END\r\n")
	ch := testbroker.Channel(t)
	if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err == nil {
		t.Fatalf("queue %s was created", q)
	}
}
