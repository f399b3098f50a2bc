package amqp

import (
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// A get of a flowing queue that was handed a delivery while its question
// to the broker (how many messages are ready) waits for the queue's get
// channel returns the delivery at once. At 1,000 clients a passive
// declaration per get queued on that channel, and gets that had their
// message waited seconds for their turn. Here the test holds the get
// channel, so the question cannot be asked until the test lets go.
func TestFlowGetServedWhileAskingReady(t *testing.T) {
	// One get channel: while the test holds it, the question waits.
	// (With more, each concurrent question opens another, up to
	// GetChannels, and then waits for the queue's own.)
	c, ctx, q := startWithQueue(t, "askready", Options{GetChannels: 1})
	f := c.fetcher(q)
	// Gets close together make the queue hot: its consumer starts.
	testbroker.Eventually(t, 10*time.Second, "the queue's consumer flows", func() bool {
		if _, err := c.Get(ctx, q); err != nil {
			t.Fatalf("Get: %v", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.state == stateFlowing
	})
	qc, err := f.channel() // locked: no passive declaration gets through
	if err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			qc.mu.Unlock()
		}
	}
	defer release()

	type got struct {
		d   *Delivery
		err error
	}
	res := make(chan got, 1)
	go func() {
		d, err := c.Get(ctx, q)
		res <- got{d, err}
	}()
	// The get is in line, past its grace, and asking how many are ready;
	// the question waits for the channel.
	testbroker.Eventually(t, 5*time.Second, "the get asks how many are ready", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.waiters) == 1 && f.asking != nil
	})
	if err := c.Publish(ctx, Message{RoutingKey: q, Body: []byte("m")}); err != nil {
		t.Fatal(err)
	}
	hold := time.NewTimer(3 * time.Second)
	defer hold.Stop()
	var r got
	select {
	case r = <-res:
	case <-hold.C:
		release()
		r = <-res
		t.Errorf("the get returned its message only once the get channel was free again (held 3s)")
	}
	release()
	if r.err != nil || r.d == nil || string(r.d.Body) != "m" {
		t.Fatalf("Get = %v, %v; want the message", r.d, r.err)
	}
	if err := r.d.Ack(); err != nil {
		t.Fatal(err)
	}
}
