package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// stuckGet publishes m0…m<n-1> to a new queue (declared by someone else:
// not fetched ahead), suspends the queue's process and makes a get that
// the broker answers only after the RPC timeout: the get returns
// ErrBrokerTimeout and goes on, and will take m0 once resume is called.
// The timeout leaves resume's rabbitmqctl call, which takes a second or
// two on a busy machine, ample time within the next get's wait.
func stuckGet(t *testing.T, hint string, n int) (c *mcamqp.Client, q string, ctx context.Context, resume func()) {
	t.Helper()
	c = startClient(t, mcamqp.Options{RPCTimeout: 6 * time.Second, GetChannels: 4})
	q = testbroker.Name(t, hint)
	declareQueue(t, q, nil)
	for i := range n {
		publish(t, c, q, fmt.Sprintf("m%d", i))
	}
	ctx = ctxT(t)
	resume = testbroker.SuspendQueue(t, q)
	if d, err := c.Get(ctx, q); !errors.Is(err, mcamqp.ErrBrokerTimeout) {
		t.Fatalf("get of a suspended queue: %v, %v; want ErrBrokerTimeout", d, err)
	}
	return c, q, ctx, resume
}

// fetched is a get's or a wait's outcome, from its goroutine.
type fetched struct {
	d   *mcamqp.Delivery
	err error
}

// mustBe fails the test unless r handed out body.
func (r fetched) mustBe(t *testing.T, what, body string) {
	t.Helper()
	if r.err != nil || r.d == nil || string(r.d.Body) != body {
		got := ""
		if r.d != nil {
			got = string(r.d.Body)
		}
		t.Fatalf("%s: %q, %v; want %s", what, got, r.err, body)
	}
}

// getsInOrder gets and acks m<from>…m<n-1>, in that order.
func getsInOrder(t *testing.T, c *mcamqp.Client, ctx context.Context, q string, from, n int) {
	t.Helper()
	for i := from; i < n; i++ {
		d, err := c.Get(ctx, q)
		fetched{d, err}.mustBe(t, fmt.Sprintf("get %d", i), fmt.Sprintf("m%d", i))
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
}

// A get that the broker answers only after the RPC timeout keeps the
// queue's order: the get behind it waits for it, and the message it took
// late (the head) is the next one handed out. Before, the late message was
// nacked back, while the next get, already queued at the broker on another
// channel, took the message after it: the client saw them out of order.
func TestStuckGetKeepsTheOrder(t *testing.T) {
	const n = 5
	c, q, ctx, resume := stuckGet(t, "stuckget", n)
	next := make(chan fetched, 1)
	go func() {
		d, err := c.Get(ctx, q)
		next <- fetched{d, err}
	}()
	resume()
	g := <-next
	g.mustBe(t, "the get after the stuck one", "m0")
	if err := g.d.Ack(); err != nil {
		t.Fatal(err)
	}
	getsInOrder(t, c, ctx, q, 1, n)
	testbroker.Eventually(t, 10*time.Second, "the queue empty, nothing unacked", func() bool {
		return testbroker.QueueDepth(t, q) == 0 && testbroker.Unacked(t, q) == 0
	})
}

// The message a stuck get brings late goes to the wait in line for it, not
// to the broker's next basic.get: a wait (kestrel's /t=) that started
// while the get was stuck gets the head, m0.
func TestStuckGetServesTheWaitInLine(t *testing.T) {
	const n = 3
	c, q, ctx, resume := stuckGet(t, "stuckwait", n)
	waited := make(chan fetched, 1)
	go func() {
		d, err := c.Wait(ctx, q, 10*time.Second)
		waited <- fetched{d, err}
	}()
	testbroker.Eventually(t, 5*time.Second, "the wait in line", func() bool { return c.Waiters(q) == 1 })
	resume()
	g := <-waited
	g.mustBe(t, "the wait", "m0")
	if err := g.d.Ack(); err != nil {
		t.Fatal(err)
	}
	getsInOrder(t, c, ctx, q, 1, n)
}

// A get the broker never answers does not stop the queue for long: after a
// second RPC timeout the queue's gets go on without it, and what it takes
// when it is answered at last goes back to the queue. RabbitMQ 3.x lets a
// basic.get of a quorum queue whose leader went away wait up to 65 s;
// waiting for it stopped the queue on one gateway for a minute in the
// cluster test's node stop. A give-back of a message fetched on the stuck
// get's channel does not wait for it either: its barrier waited for the
// channel until the get was answered. Here the broker's processes of the
// client's get channels are suspended: the get sent on one hangs, while
// channels opened later work.
func TestUnansweredGetIsWrittenOff(t *testing.T) {
	name := uniqueConnName()
	const rpcTimeout = 2 * time.Second
	c := startClient(t, mcamqp.Options{ConnectionName: name, RPCTimeout: rpcTimeout, GetChannels: 8})
	q := testbroker.Name(t, "writeoff")
	declareQueue(t, q, nil)
	for i := range 3 {
		publish(t, c, q, fmt.Sprintf("m%d", i))
	}
	ctx := ctxT(t)
	held, err := c.Get(ctx, q)
	fetched{held, err}.mustBe(t, "the first get", "m0")

	n, resume := testbroker.SuspendChannels(t, name+" consume ")
	if n == 0 {
		t.Fatal("no channel of the consume connection to suspend")
	}
	if d, err := c.Get(ctx, q); !errors.Is(err, mcamqp.ErrBrokerTimeout) {
		t.Fatalf("get on a suspended channel: %v, %v; want ErrBrokerTimeout", d, err)
	}
	stuckAt := time.Now()
	// m0 came on the stuck get's channel.
	gaveBack := make(chan error, 1)
	go func() { gaveBack <- held.Requeue() }()
	select {
	case err := <-gaveBack:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * rpcTimeout):
		t.Fatalf("giving m0 back took over %v while a get was stuck on its channel", 3*rpcTimeout)
	}
	// The gets after it wait for it, then go on without it, on channels
	// that work (a get may first take another suspended one, and be
	// written off in turn).
	var got *mcamqp.Delivery
	testbroker.Eventually(t, 8*rpcTimeout, "a get that goes on without the stuck one", func() bool {
		d, err := c.Get(ctx, q)
		if err != nil {
			return false
		}
		if d == nil {
			t.Fatal("a miss while the queue holds m1 and m2")
		}
		got = d
		return true
	})
	t.Logf("the queue served again %v after the get got stuck (%d channels suspended)", time.Since(stuckAt).Round(time.Millisecond), n)
	// m0's reject waits in the suspended channel.
	fetched{got, nil}.mustBe(t, "the get after the write-off", "m1")
	if err := got.Ack(); err != nil {
		t.Fatal(err)
	}

	// Answered at last, the stuck get takes m2, which goes back, and the
	// broker takes m0's reject: both are handed out again (their order is
	// lost in this fault).
	resume()
	left := map[string]bool{"m0": true, "m2": true}
	testbroker.Eventually(t, 10*time.Second, "m0 and m2 back in the queue", func() bool {
		d, err := c.Get(ctx, q)
		if err != nil || d == nil {
			return false
		}
		if !left[string(d.Body)] {
			t.Fatalf("got %q, want m0 or m2, once each", d.Body)
		}
		delete(left, string(d.Body))
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		return len(left) == 0
	})
	testbroker.Eventually(t, 10*time.Second, "the queue empty, nothing unacked or held", func() bool {
		return testbroker.QueueDepth(t, q) == 0 && testbroker.Unacked(t, q) == 0 && c.Held(q) == 0
	})
}

// With every get channel taken, a get waits for its queue's own channel,
// and when a get the broker never answers holds that one, it answers
// ErrBrokerTimeout within an RPC timeout or two rather than wait for the
// broker as long as the stuck get does (a minute for a quorum queue whose
// leader went away).
func TestGetOfAFullPoolDoesNotWaitForAStuckChannel(t *testing.T) {
	name := uniqueConnName()
	const rpcTimeout = time.Second
	c := startClient(t, mcamqp.Options{ConnectionName: name, RPCTimeout: rpcTimeout, GetChannels: 1})
	q := testbroker.Name(t, "fullpool")
	declareQueue(t, q, nil)
	publish(t, c, q, "m0")
	ctx := ctxT(t)
	if d, err := c.Get(ctx, q); err != nil || d == nil {
		t.Fatalf("first get: %v, %v", d, err)
	} else if err := d.RequeueNow(); err != nil {
		t.Fatal(err)
	}
	if _, resume := testbroker.SuspendChannels(t, name+" consume "); resume == nil {
		t.Fatal("nothing suspended")
	}
	if d, err := c.Get(ctx, q); !errors.Is(err, mcamqp.ErrBrokerTimeout) {
		t.Fatalf("get on a suspended channel: %v, %v; want ErrBrokerTimeout", d, err)
	}
	// The gets after it: the first waits for the stuck one, and after the
	// write-off they wait for its channel, each an RPC timeout at most.
	for i := range 3 {
		res := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := c.Get(ctx, q)
			res <- err
		}()
		select {
		case err := <-res:
			if !errors.Is(err, mcamqp.ErrBrokerTimeout) {
				t.Fatalf("get %d while the only get channel is stuck: %v; want ErrBrokerTimeout", i, err)
			}
			t.Logf("get %d: %v after %v", i, err, time.Since(start).Round(time.Millisecond))
		case <-time.After(4 * rpcTimeout):
			t.Fatalf("get %d waited over %v for a channel the broker does not answer on", i, 4*rpcTimeout)
		}
	}
}

// A wait (kestrel's /t=) of a queue that is not fetched ahead polls with
// basic.get. When its time runs out while a poll for it is under way, it
// waits for that poll's answer, which may be its message: before, the wait
// missed, and the message the poll took went back to the queue, which a
// quorum queue counts as a delivery no client received (CI saw the bridge's
// quorum test miss three short waits in a row while the machine was busy).
// Here the broker's process of the get channel is suspended while the
// poll is under way, past the wait's timeout.
func TestWaitTakesWhatItsPollBrings(t *testing.T) {
	name := uniqueConnName()
	c := startClient(t, mcamqp.Options{ConnectionName: name, RPCTimeout: 6 * time.Second, GetChannels: 1})
	q := testbroker.Name(t, "pollwait")
	declareQueue(t, q, amqp091.Table{"x-queue-type": "quorum"})
	ctx := ctxT(t)
	// The get channel is open: a miss opened it.
	if d, err := c.Get(ctx, q); d != nil || err != nil {
		t.Fatalf("get of the empty queue: %v, %v", d, err)
	}
	publish(t, c, q, "m0")
	testbroker.Eventually(t, 10*time.Second, "m0 in the queue", func() bool { return testbroker.QueueDepth(t, q) == 1 })
	_, resume := testbroker.SuspendChannels(t, name+" consume ")

	const timeout = 100 * time.Millisecond
	res := make(chan fetched, 1)
	go func() {
		d, err := c.Wait(ctx, q, timeout)
		res <- fetched{d, err}
	}()
	var r fetched
	select {
	case r = <-res:
		resume()
	case <-time.After(10 * timeout):
		// Still waiting for the poll, as it should: let it be answered.
		resume()
		r = <-res
	}
	r.mustBe(t, "the wait whose poll was answered late", "m0")
	if err := r.d.Ack(); err != nil {
		t.Fatal(err)
	}
	testbroker.Eventually(t, 10*time.Second, "the queue empty, nothing unacked or held", func() bool {
		return testbroker.QueueDepth(t, q) == 0 && testbroker.Unacked(t, q) == 0 && c.Held(q) == 0
	})
}
