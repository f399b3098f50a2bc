package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// sdDrain empties queue with raw auto-ack gets and returns the bodies, in
// order.
func sdDrain(t *testing.T, ch *amqp091.Channel, queue string) []amqp091.Delivery {
	t.Helper()
	var out []amqp091.Delivery
	for {
		m, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("raw get %s: %v", queue, err)
		}
		if !ok {
			return out
		}
		out = append(out, m)
	}
}

func TestShutdownRequeuesHeldAndClosesClients(t *testing.T) {
	q := testbroker.Name(t, "held")
	g := startGateway(t, nil)
	holder := g.dial()
	holder.Do("set "+q+" 8 0 4\r\njob1\r\n", "STORED\r\n")
	holder.Do("set "+q+" 9 0 4\r\njob2\r\n", "STORED\r\n")
	holder.Do("gets "+q+"\r\n", "VALUE "+q+" 8 4 ")
	if cas := holder.Line(); cas == "" {
		t.Fatalf("no cas unique")
	}
	holder.Expect("job1\r\nEND\r\n")
	idle := g.dial()
	idle.synced()

	start := time.Now()
	g.stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("graceful stop took %v with idle clients: they were not told to go", took)
	}
	holder.ExpectClosed()
	idle.ExpectClosed()

	// The held message is back, at the head, marked redelivered; the
	// other one is untouched.
	ch := testbroker.Channel(t)
	msgs := sdDrain(t, ch, q)
	if len(msgs) != 2 {
		t.Fatalf("queue holds %d messages after shutdown, want 2", len(msgs))
	}
	byBody := map[string]amqp091.Delivery{}
	for _, m := range msgs {
		byBody[string(m.Body)] = m
	}
	m, ok := byBody["job1"]
	if !ok || !m.Redelivered {
		t.Fatalf("held message after shutdown: present=%v redelivered=%v, want redelivered", ok, m.Redelivered)
	}
	if v, _ := m.Headers["x-mc-flags"].(int64); v != 8 {
		t.Fatalf("held message flags header %#v, want int64(8)", m.Headers["x-mc-flags"])
	}
	if m2, ok := byBody["job2"]; !ok || m2.Redelivered {
		t.Fatalf("unreserved message: present=%v redelivered=%v, want present and not redelivered", ok, m2.Redelivered)
	}

	// A new connection to the stopped gateway is refused.
	if nc, err := net.DialTimeout("tcp", g.addr, time.Second); err == nil {
		nc.Close()
		t.Fatalf("the stopped gateway still accepts connections")
	}
}

// sdOutcome is what one client saw of its set during a shutdown.
type sdOutcome struct {
	body  string
	reply string // the reply line; "" when the connection closed first
	err   error  // how the connection ended when there was no reply
}

// TestShutdownSetInFlight: a set racing a graceful stop either gets its
// reply (STORED, and then the message is in the queue) or the connection
// closes before the command was read (and then nothing was stored). A
// message stored without a reply, or a STORED whose message is missing,
// fails the test.
func TestShutdownSetInFlight(t *testing.T) {
	const rounds = 6
	const clients = 8
	storedSeen, closedSeen := 0, 0
	for round := range rounds {
		q := testbroker.Name(t, fmt.Sprintf("inflight%d", round))
		g := startGateway(t, nil)
		// Create the queue so that the race is about the publish only.
		pre := g.dial()
		pre.Do("get "+q+"\r\n", "END\r\n")
		pre.Close()

		conns := make([]net.Conn, clients)
		readers := make([]*bufio.Reader, clients)
		for i := range clients {
			c := g.dial()
			c.synced() // accepted and served: Shutdown knows it
			conns[i], readers[i] = c.NetConn, c.Reader
		}
		outcomes := make([]sdOutcome, clients)
		var wg, written sync.WaitGroup
		ready := make(chan struct{})
		for i := range clients {
			if i%2 == 0 {
				written.Add(1)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := &outcomes[i]
				o.body = fmt.Sprintf("r%d-c%d", round, i)
				nc := conns[i]
				_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
				cmd := fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", q, len(o.body), o.body)
				// Even clients have sent their set when the stop begins;
				// odd ones send it while the stop runs.
				if i%2 == 1 {
					<-ready
				}
				_, err := io.WriteString(nc, cmd)
				if i%2 == 0 {
					written.Done()
				}
				if err != nil {
					o.err = fmt.Errorf("write: %w", err)
					return
				}
				line, err := readers[i].ReadString('\n')
				if err != nil {
					if line != "" {
						o.reply = line // partial: reported as a bad reply
					}
					o.err = err
					return
				}
				o.reply = strings.TrimSuffix(line, "\r\n")
				// After its reply the connection is closed by the drain.
				if b, err := readers[i].ReadByte(); err == nil {
					o.err = fmt.Errorf("connection still open after shutdown: read %q", b)
				}
			}()
		}
		written.Wait()
		close(ready)
		g.stop()
		wg.Wait()

		ch := testbroker.Channel(t)
		inQueue := map[string]int{}
		for _, m := range sdDrain(t, ch, q) {
			inQueue[string(m.Body)]++
		}
		for _, o := range outcomes {
			switch {
			case o.reply == "STORED":
				storedSeen++
				if o.err != nil {
					t.Errorf("round %d %s: %v", round, o.body, o.err)
				}
				if inQueue[o.body] != 1 {
					t.Errorf("round %d: %s got STORED but the queue holds it %d times", round, o.body, inQueue[o.body])
				}
			case o.reply == "" && (errors.Is(o.err, io.EOF) || mctest.IsReset(o.err) || strings.HasPrefix(fmt.Sprint(o.err), "write:")):
				closedSeen++
				if inQueue[o.body] != 0 {
					t.Errorf("round %d: %s: the connection closed without a reply (%v) yet the message was stored: the command was read and its reply lost", round, o.body, o.err)
				}
			default:
				t.Errorf("round %d: %s: reply %q, err %v; want STORED, or a close before the command was read", round, o.body, o.reply, o.err)
			}
		}
		if len(inQueue) > 0 {
			for b := range inQueue {
				found := false
				for _, o := range outcomes {
					found = found || o.body == b
				}
				if !found {
					t.Errorf("round %d: unexpected message %q in the queue", round, b)
				}
			}
		}
	}
	t.Logf("%d sets answered STORED, %d connections closed before their set was read", storedSeen, closedSeen)
}

// TestBrokerDown: a gateway whose broker cannot be reached answers every
// queue command with SERVER_ERROR (never a miss that would make a worker
// think the queue is empty), at once, without leaking the AMQP password.
func TestBrokerDown(t *testing.T) {
	for _, tc := range []struct{ url, secret string }{
		{"amqp://guest:guest@127.0.0.1:1/", "guest"},
		{"amqp://mcuser:pw-Zq8x3K@127.0.0.1:1/vh", "pw-Zq8x3K"},
	} {
		t.Run(tc.secret, func(t *testing.T) {
			cfg := testConfig()
			cfg.AMQP.URLs = []config.URL{config.URL(tc.url)}
			g := startGateway(t, cfg)
			q := testbroker.Name(t, "down")
			c := g.dial()
			check := func(what, cmd string) {
				t.Helper()
				start := time.Now()
				c.Send(cmd)
				line := c.Line()
				took := time.Since(start)
				if !strings.HasPrefix(line, "SERVER_ERROR ") || len(line) <= len("SERVER_ERROR ") {
					t.Errorf("%s with the broker down: %q, want SERVER_ERROR <reason>", what, line)
				}
				if took > 2*time.Second {
					t.Errorf("%s with the broker down took %v, want < 2s", what, took)
				}
				if strings.Contains(line, tc.secret) {
					t.Errorf("%s reply leaks the password: %q", what, line)
				}
			}
			check("set", "set "+q+" 0 0 5\r\nhello\r\n")
			check("get", "get "+q+"\r\n")
			check("gets", "gets "+q+"\r\n")
			check("get of two keys", "get "+q+" "+q+"x\r\n")
			check("set again", "set "+q+" 3 0 2\r\nhi\r\n")
			c.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
			c.synced()
		})
	}
}

// TestShutdownPipelinedSetsKeepTheirReplies: a client pipelines many sets
// in one write (as memcache clients do for multi-sets with noreply off);
// the stop lands in the middle. Every set the gateway executed must get
// its STORED before the connection closes: a message in the queue whose
// client never heard STORED will be sent again by that client (a
// duplicate), and from the client's side it looks lost.
func TestShutdownPipelinedSetsKeepTheirReplies(t *testing.T) {
	const n = 300
	q := testbroker.Name(t, "pipeline")
	g := startGateway(t, nil)
	c := g.dial()
	c.Do("get "+q+"\r\n", "END\r\n") // declares the queue

	var b strings.Builder
	for i := range n {
		body := fmt.Sprintf("pl-%04d", i)
		fmt.Fprintf(&b, "set %s 0 0 %d\r\n%s\r\n", q, len(body), body)
	}
	c.Send(b.String())

	// Wait until the gateway is in the middle of the pipeline.
	ch := testbroker.Channel(t)
	testbroker.Eventually(t, 10*time.Second, "some of the pipelined sets to be stored", func() bool {
		qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatalf("passive declare: %v", err)
		}
		return qi.Messages >= 5
	})
	g.stop()

	stored := 0
	_ = c.NetConn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := c.Reader.ReadString('\n')
		if err != nil {
			if line != "" {
				t.Fatalf("partial reply line %q before %v", line, err)
			}
			if !errors.Is(err, io.EOF) && !mctest.IsReset(err) {
				t.Fatalf("reading replies: %v", err)
			}
			break
		}
		if line != "STORED\r\n" {
			t.Fatalf("reply %d: %q, want STORED", stored+1, line)
		}
		stored++
	}
	msgs := sdDrain(t, ch, q)
	t.Logf("%d of %d pipelined sets answered STORED before the close; the queue holds %d", stored, n, len(msgs))
	if len(msgs) == n {
		t.Logf("the stop came after the whole pipeline: nothing tested about the cut")
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("pl-%04d", i); string(m.Body) != want {
			t.Fatalf("queue message %d is %q, want %q", i, m.Body, want)
		}
	}
	if len(msgs) != stored {
		t.Fatalf("the gateway stored %d messages but answered STORED for only %d: %d replies were dropped at shutdown", len(msgs), stored, len(msgs)-stored)
	}
}

// TestPipelinedReplyNotHeldBehindPartialCommand is the same cause seen
// without a shutdown: replies go out only when the read buffer is empty, so
// a completed set whose next command has only partly arrived keeps its
// STORED until the rest of that command comes. memcached answers what it
// has executed before it waits for more input; a client that sent a set and
// the line of the next one and waits for the first reply must not stall
// until read_timeout.
func TestPipelinedReplyNotHeldBehindPartialCommand(t *testing.T) {
	q := testbroker.Name(t, "partial")
	g := startGateway(t, nil)
	c := g.dial()
	c.Send("set " + q + " 0 0 1\r\na\r\nset " + q + " 0 0 1\r\n")
	_ = c.NetConn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := c.Reader.ReadString('\n')
	if err != nil {
		t.Fatalf("no reply to the completed set within 3s while the next command is incomplete (got %q, %v)", line, err)
	}
	if line != "STORED\r\n" {
		t.Fatalf("reply %q, want STORED", line)
	}
	c.Send("b\r\n")
	c.Expect("STORED\r\n")
	c.synced()
}
