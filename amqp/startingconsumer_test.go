package amqp

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// A get in line while the queue's consumer starts returns the message the
// broker pushed to that consumer; it used to miss it. The broker answers
// that no message is ready once it has pushed the last one to the new
// consumer, and the get, which asked before the consumer flowed, did not
// wait for what the consumer was bringing: a miss in 2 ms, though the
// queue held a message all along. The socket fuzz test's well-behaved
// client saw it under load (set, set, get and give back, get and ack,
// get: a miss); here the test holds the pump between the consumer's
// consume-ok and its first delivery, which makes it happen every time.
func TestGetWhileTheConsumerStarts(t *testing.T) {
	c, ctx, q := startWithQueue(t, "starting", Options{})
	var armed atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	c.afterSubscribe = func() {
		if armed.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-release
		}
	}
	ch := testbroker.Channel(t)
	pub := func(body string) {
		t.Helper()
		if err := ch.PublishWithContext(ctx, "", q, false, false, amqp091.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}

	// A get soon after another makes the queue hot: it waits in line for
	// the consumer it starts. Should the machine be so slow that the
	// second get comes too late for that, it is a plain basic.get, and
	// the round is tried again.
	for round := range 5 {
		first, second := fmt.Sprintf("a%d", round), fmt.Sprintf("b%d", round)
		pub(first)
		pub(second)
		testbroker.Eventually(t, 10*time.Second, "both messages queued", func() bool { return testbroker.QueueDepth(t, q) == 2 })
		// The consumer of an earlier round has gone idle and stopped.
		testbroker.Eventually(t, 10*time.Second, "no consumer", func() bool {
			f := c.fetcher(q)
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.state == stateIdle && !f.pumping
		})
		armed.Store(true)
		d, err := c.Get(ctx, q)
		if err != nil || d == nil || string(d.Body) != first {
			t.Fatalf("first get: %v, %v; want %s", d, err, first)
		}
		type result struct {
			d   *Delivery
			err error
		}
		res := make(chan result, 1)
		go func() {
			d, err := c.Get(ctx, q)
			res <- result{d, err}
		}()
		var r result
		ran := false
		select {
		case r = <-res:
			// Served by basic.get: the gets were not close enough.
			armed.Store(false)
			t.Logf("round %d: the second get did not start a consumer", round)
		case <-entered:
			// The consumer is subscribed and held: the broker pushes it
			// the second message (nothing is ready any more), and the get
			// must wait for it rather than miss. A get that misses does
			// so within lineMax.
			ran = true
			testbroker.Eventually(t, 10*time.Second, "the message pushed to the consumer", func() bool { return testbroker.QueueDepth(t, q) == 0 })
			answered := false
			select {
			case r = <-res:
				answered = true
			case <-time.After(2 * lineMax):
			}
			close(release)
			if !answered {
				r = <-res
			}
		}
		if r.err != nil || r.d == nil || string(r.d.Body) != second {
			got := "a miss"
			if r.d != nil {
				got = string(r.d.Body)
			}
			t.Fatalf("round %d: get while the consumer starts: %s, %v; want %s", round, got, r.err, second)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		if err := r.d.Ack(); err != nil {
			t.Fatal(err)
		}
		if ran {
			return // the case this test is for was run, and passed
		}
	}
	t.Fatal("5 rounds and the second get never started a consumer")
}
