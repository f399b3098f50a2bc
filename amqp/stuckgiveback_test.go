package amqp

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// A give-back made while a get is stuck at the broker goes first. The
// give-back does not wait for the stuck get (which could take two RPC
// timeouts); the stuck get, answered once the queue wakes, took the
// message behind the one given back, and that message then goes back too
// instead of being handed out ahead of it.
func TestGiveBackWhileAGetIsStuck(t *testing.T) {
	c, ctx := startInternal(t, "stuckgiveback", Options{RPCTimeout: 6 * time.Second})
	q := testbroker.Name(t, "stuckgiveback")
	ch := testbroker.Channel(t)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := range n {
		if err := c.Publish(ctx, Message{RoutingKey: q, Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	m0, err := c.Get(ctx, q)
	if err != nil || m0 == nil || string(m0.Body) != "m0" {
		t.Fatalf("first get: %v, %v", m0, err)
	}
	f := c.fetcher(q)

	resume := testbroker.SuspendQueue(t, q)
	if d, err := c.Get(ctx, q); !errors.Is(err, ErrBrokerTimeout) {
		t.Fatalf("get of a suspended queue: %v, %v; want ErrBrokerTimeout", d, err)
	}
	requeued := make(chan error, 1)
	go func() { requeued <- m0.Requeue() }()
	testbroker.Eventually(t, 5*time.Second, "the give-back begun", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.givebacks > 0
	})
	resume()
	if err := <-requeued; err != nil {
		t.Fatalf("requeue: %v", err)
	}
	for i := range n {
		var d *Delivery
		testbroker.Eventually(t, 15*time.Second, fmt.Sprintf("get %d answered", i), func() bool {
			d, err = c.Get(ctx, q)
			return err == nil && d != nil
		})
		if want := fmt.Sprintf("m%d", i); string(d.Body) != want {
			t.Fatalf("get %d after the give-back: %q, want %s", i, d.Body, want)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	testbroker.Eventually(t, 10*time.Second, "nothing counted as held", func() bool { return f.held.Load() == 0 })
}
