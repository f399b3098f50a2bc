package bridge

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/bridge/internal/queues"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// Regression tests for SPEC §4's promises, each against a way they were
// broken.

// getValue sends "get key" and returns the body of the hit, "" on a miss.
func (c *client) getValue(key string) string {
	c.T.Helper()
	c.Send("get " + key + "\r\n")
	l := c.Line()
	if l == "END" {
		return ""
	}
	var k string
	var flags, n int
	if _, err := fmt.Sscanf(l, "VALUE %s %d %d", &k, &flags, &n); err != nil {
		c.T.Fatalf("get %s: %q", key, l)
	}
	body := c.Line()
	c.Expect("END\r\n")
	return body
}

// consumers is the broker's count of consumers on queue.
func consumers(t testing.TB, queue string) int {
	t.Helper()
	ch := testbroker.Channel(t)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("passive declare %s: %v", queue, err)
	}
	return q.Consumers
}

// On a quorum queue (and one whose type the gateway does not know) the
// gateway never takes a message that no client asked for: every message
// given back counts toward the delivery limit, and past it the broker drops
// the message (no dead-letter exchange here). A waiting client and plain
// gets once made the gateway prefetch, give back and re-subscribe until 7
// of 8 STORED messages were gone.
func TestQuorumMessagesAreNeverFetchedAhead(t *testing.T) {
	q := testbroker.Name(t, "quorum")
	g := startGateway(t, yamlConfig(t, fmt.Sprintf("queues:\n  - {name: %s, type: quorum, delivery_limit: 2}\n", q)))
	producer, waiter, getter := g.dial(), g.dial(), g.dial()
	// A client waits on the empty queue; the messages arrive while it
	// waits, and it takes one.
	waiter.Send("get " + q + "/t=5000\r\n")
	testbroker.Eventually(t, 5*time.Second, "the client to wait", func() bool { return g.broker.Waiters(q) == 1 })
	const n = 8
	for i := range n {
		producer.Do(fmt.Sprintf("set %s 0 0 2\r\nm%d\r\n", q, i), "STORED\r\n")
	}
	waiter.Expect("VALUE " + q + "/t=5000 0 2\r\nm0\r\nEND\r\n")
	waiter.Do("delete "+q+"\r\n", "DELETED\r\n")
	// Plain gets, with pauses that let an idle consumer go and a busy one
	// come back, take two more.
	for i := 1; i <= 2; i++ {
		time.Sleep(1200 * time.Millisecond) // longer than any prefetch is held
		for range 3 {
			getter.getValue(q + "/t=50") // reserves one, then misses (held)
		}
		getter.Do("delete "+q+"\r\n", "DELETED\r\n")
	}
	// The five that no client received were never given back: all there,
	// none with a delivery count. (A quorum queue counts the basic.get
	// channel as a consumer, so the consumer count tells nothing here.)
	ch := testbroker.Channel(t)
	left := 0
	for {
		m, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatalf("raw get: %v", err)
		}
		if !ok {
			break
		}
		left++
		if dc, ok := m.Headers["x-delivery-count"].(int64); ok && dc > 0 {
			t.Errorf("message %q has x-delivery-count %d: it was given back %d times without a client receiving it", m.Body, dc, dc)
		}
	}
	if left != n-3 {
		t.Errorf("%d messages left in the queue, want %d (the broker dropped the rest)", left, n-3)
	}
}

// A classic queue whose type the gateway cannot be sure of (an operator
// declared it with arguments of their own) is not fetched ahead either: busy
// gets never put a consumer on it. A queue the gateway declared is.
func TestUnknownQueueTypeIsNotFetchedAhead(t *testing.T) {
	g := startGateway(t, nil)
	theirs, ours := testbroker.Name(t, "theirs"), testbroker.Name(t, "ours")
	ch := testbroker.Channel(t)
	if _, err := ch.QueueDeclare(theirs, true, false, false, false, amqp091.Table{"x-max-length": int64(1000)}); err != nil {
		t.Fatal(err)
	}
	c := g.dial()
	for _, q := range []string{theirs, ours} {
		for i := range 40 {
			c.Do(fmt.Sprintf("set %s 0 0 %d\r\n%d\r\n", q, len(strconv.Itoa(i)), i), "STORED\r\n")
		}
	}
	busy := func(q string) (maxConsumers int) {
		for i := range 30 {
			if got := c.getValue(q); got != strconv.Itoa(i) {
				t.Fatalf("get %s: %q, want %d", q, got, i)
			}
			c.Do("delete "+q+"\r\n", "DELETED\r\n")
			maxConsumers = max(maxConsumers, consumers(t, q))
		}
		return maxConsumers
	}
	if n := busy(theirs); n != 0 {
		t.Errorf("busy gets of a queue of unknown type put %d consumers on it", n)
	}
	if n := busy(ours); n != 1 {
		t.Errorf("busy gets of a classic queue the gateway declared: %d consumers, want 1 (fetching ahead)", n)
	}
}

// requeues sums mcbridge_requeued_total for reason over every queue label.
func requeues(g *gateway, reason string) float64 {
	var n float64
	for _, label := range []string{queues.AutoLabel} {
		n += toFloat64(g.srv.metrics.Requeued.WithLabelValues(label, reason))
	}
	for _, q := range g.cfg.Queues {
		n += toFloat64(g.srv.metrics.Requeued.WithLabelValues(q.Name, reason))
	}
	return n
}

// brokerMajor is the major version of the test broker.
func brokerMajor(t testing.TB) int {
	v, _ := testbroker.Dial(t).Properties["version"].(string)
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		t.Fatalf("broker version %q", v)
	}
	return n
}

// Every give-back puts the message at the head: the next get of the queue
// through this gateway returns it before newer ones, on a busy classic
// queue (fetched ahead) and a queue of unknown type alike. Kestrel
// promises it for /abort; mcbridge for every way a reservation goes back:
// /abort, a negative touch, a lease that ends, a disconnect. A quorum queue
// on RabbitMQ 3.x puts a requeued message at its back, whoever requeues it:
// there it comes after the others, and is not lost.
func TestGiveBackReturnsToTheHead(t *testing.T) {
	quorum := testbroker.Name(t, "quorum")
	g := startGateway(t, yamlConfig(t, fmt.Sprintf("queues:\n  - {name: %s, type: quorum}\n", quorum)))
	theirs := testbroker.Name(t, "theirs")
	if _, err := testbroker.Channel(t).QueueDeclare(theirs, true, false, false, false, amqp091.Table{"x-max-length": int64(1000)}); err != nil {
		t.Fatal(err)
	}
	quorumAtBack := brokerMajor(t) < 4
	ways := []struct {
		name     string
		giveBack func(c *client, q string) *client // returns the client to go on with
	}{
		{"abort", func(c *client, q string) *client {
			c.Do("get "+q+"/abort\r\n", "END\r\n")
			return c
		}},
		{"negative touch", func(c *client, q string) *client {
			c.Do("touch "+q+" -1\r\n", "TOUCHED\r\n")
			return c
		}},
		{"lease end", func(c *client, q string) *client {
			before := requeues(g, metrics.ReasonTimeout)
			c.Do("touch "+q+" 1\r\n", "TOUCHED\r\n")
			testbroker.Eventually(t, 5*time.Second, "the lease to end", func() bool {
				return requeues(g, metrics.ReasonTimeout) == before+1
			})
			return c
		}},
		{"disconnect", func(c *client, q string) *client {
			before := requeues(g, metrics.ReasonDisconnect)
			c.Close()
			testbroker.Eventually(t, 5*time.Second, "the disconnect to give the message back", func() bool {
				return requeues(g, metrics.ReasonDisconnect) == before+1
			})
			return g.dial()
		}},
	}
	for _, kind := range []string{"classic", "quorum", "unknown"} {
		for _, way := range ways {
			t.Run(kind+"/"+way.name, func(t *testing.T) {
				q := testbroker.Name(t, "q")
				switch kind {
				case "quorum":
					q = quorum
				case "unknown":
					q = theirs
				}
				c := g.dial()
				const n = 30
				for i := range n {
					c.Do(fmt.Sprintf("set %s 0 0 3\r\n%03d\r\n", q, i), "STORED\r\n")
				}
				// Busy gets: on the classic queue the gateway fetches
				// ahead by now.
				next := 0
				for range 5 {
					if got, want := c.getValue(q), fmt.Sprintf("%03d", next); got != want {
						t.Fatalf("get: %q, want %q", got, want)
					}
					c.Do("delete "+q+"\r\n", "DELETED\r\n")
					next++
				}
				held := fmt.Sprintf("%03d", next)
				if got := c.getValue(q); got != held {
					t.Fatalf("get: %q, want %q", got, held)
				}
				if kind == "classic" {
					if n := consumers(t, q); n != 1 {
						t.Fatalf("the busy classic queue has %d consumers; the test needs it fetched ahead", n)
					}
				}
				c = way.giveBack(c, q)
				var want, got []string
				if !(kind == "quorum" && quorumAtBack) {
					want = append(want, held)
				}
				for i := next + 1; i < n; i++ {
					want = append(want, fmt.Sprintf("%03d", i))
				}
				if kind == "quorum" && quorumAtBack {
					want = append(want, held)
				}
				for v := c.getValue(q); v != ""; v = c.getValue(q) {
					got = append(got, v)
					c.Do("delete "+q+"\r\n", "DELETED\r\n")
				}
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("after a give-back (%s) the queue gave\n %v\nwant\n %v", way.name, got, want)
				}
			})
		}
	}
}

// The broker's consumer_timeout counts from delivery and closes the whole
// channel, dropping every reservation on it: leases are capped from the
// delivery time, not from the last touch.
func TestLeaseCappedFromDelivery(t *testing.T) {
	cfg := testConfig()
	cfg.AMQP.ConsumerTimeout = config.LeaseMargin + 2*time.Second
	leaseCap := cfg.AMQP.LeaseCap()
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "q")
	c := g.dial()
	c.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")
	delivered := time.Now()
	c.getValue(q)
	for time.Since(delivered) < leaseCap-500*time.Millisecond {
		c.Do("touch "+q+" 60\r\n", "TOUCHED\r\n")
		time.Sleep(200 * time.Millisecond) // a worker touching its job
	}
	testbroker.Eventually(t, 3*time.Second, "the capped lease to end", func() bool {
		return toFloat64(g.srv.metrics.Requeued.WithLabelValues(queues.AutoLabel, metrics.ReasonTimeout)) == 1
	})
	if ended := time.Since(delivered); ended > leaseCap+time.Second {
		t.Errorf("the reservation ended %v after delivery, want at most about %v", ended, leaseCap)
	}
	c.Do("touch "+q+" 60\r\n", "NOT_FOUND\r\n")
	if got := c.getValue(q); got != "x" {
		t.Errorf("get after the lease ended: %q, want the message back", got)
	}
}

// A wait (/t=) ends when its client goes away: dead waiters must not be
// handed the next message (each hand-over would be a redelivery, counted
// by a quorum delivery limit), nor stay counted against max_connections.
func TestWaitEndsWhenTheClientGoesAway(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxConnections = 40
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "q")
	setter := g.dial()
	setter.Do("get "+q+"\r\n", "END\r\n") // declares it
	setter.Close()
	testbroker.Eventually(t, 5*time.Second, "the setter's connection to go", func() bool {
		return toFloat64(g.srv.metrics.Connections) == 0
	})
	for range 40 {
		nc, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write([]byte("get " + q + "/t=600000\r\n")); err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
	testbroker.Eventually(t, 5*time.Second, "the waiters' connections to go", func() bool {
		return toFloat64(g.srv.metrics.Connections) == 0
	})
	c := g.dial() // not locked out
	c.Do("set "+q+" 0 0 3\r\nnew\r\n", "STORED\r\n")
	if got := c.getValue(q); got != "new" {
		t.Fatalf("get: %q, want new", got)
	}
	if v := toFloat64(g.srv.metrics.Redelivered.WithLabelValues(queues.AutoLabel)); v != 0 {
		t.Errorf("the message was redelivered %v times: handed to dead waiters", v)
	}
	if v := toFloat64(g.srv.metrics.Requeued.WithLabelValues(queues.AutoLabel, metrics.ReasonDisconnect)); v != 0 {
		t.Errorf("%v reservations of dead waiters were requeued", v)
	}
}

// Replies to commands before a wait go out before it, in every framing.
func TestRepliesBeforeAWaitAreSent(t *testing.T) {
	g := startGateway(t, nil)
	q, empty := testbroker.Name(t, "q"), testbroker.Name(t, "empty")
	c := g.dial()
	c.Do("get "+empty+"\r\n", "END\r\n")
	for _, wait := range []string{"get " + empty + "/t=1500\r\n", "mg " + empty + "/t=1500 v\r\n"} {
		start := time.Now()
		c.Send("set " + q + " 0 0 1\r\nx\r\n" + wait)
		c.Expect("STORED\r\n")
		if d := time.Since(start); d > 700*time.Millisecond {
			t.Errorf("STORED came %v after a pipelined %q, want before the wait ends", d, strings.TrimSpace(wait))
		}
		c.Line() // the wait's miss
	}
}

// Waits that end just as a message is handed to them strand nothing: the
// message goes to the next in line or back to the queue, never into a
// wait nobody reads any more (unacked on the gateway's channel until the
// connection dies). Clients with 1 ms waits take what a producer sets;
// every message is taken exactly once, and when the clients are gone the
// broker counts nothing unacked.
func TestShortWaitsStrandNothing(t *testing.T) {
	quorum := testbroker.Name(t, "quorum")
	g := startGateway(t, yamlConfig(t, fmt.Sprintf("queues:\n  - {name: %s, type: quorum}\n", quorum)))
	for _, q := range []string{quorum, testbroker.Name(t, "classic")} {
		t.Run(q, func(t *testing.T) {
			const n, clients = 400, 8
			taken := make(chan string, 2*n)
			stop := make(chan struct{})
			errs := make(chan error, clients)
			for range clients {
				c := mctest.MustDialConn(t, g.addr)
				go func() {
					errs <- func() error {
						for {
							select {
							case <-stop:
								return nil
							default:
							}
							hit, v, err := c.Get(q + "/t=1")
							if err != nil || !hit {
								if err != nil {
									return err
								}
								continue
							}
							taken <- v
							if r, err := c.Delete(q); err != nil || r != "DELETED" {
								return fmt.Errorf("delete: %q %v", r, err)
							}
						}
					}()
				}()
			}
			t.Cleanup(func() {
				select {
				case <-stop:
				default:
					close(stop)
				}
			})
			p := g.dial()
			for i := range n {
				p.Do(fmt.Sprintf("set %s 0 0 4\r\n%04d\r\n", q, i), "STORED\r\n")
			}
			seen := map[string]int{}
			deadline := time.After(30 * time.Second)
			for len(seen) < n {
				select {
				case v := <-taken:
					seen[v]++
				case <-deadline:
					t.Fatalf("%d of %d messages taken in 30s", len(seen), n)
				}
			}
			close(stop)
			for range clients {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			close(taken)
			for v := range taken {
				seen[v]++
			}
			for v, k := range seen {
				if k != 1 {
					t.Errorf("%s taken %d times", v, k)
				}
			}
			testbroker.Eventually(t, 10*time.Second, "nothing unacked once the clients are gone", func() bool {
				return testbroker.Unacked(t, q) == 0
			})
		})
	}
}
