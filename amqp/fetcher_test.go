package amqp_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// A wait returns as soon as a message arrives, and a miss after the
// timeout when none does.
func TestWaitReturnsOnArrivalOrTimeout(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)

	start := time.Now()
	d, err := c.Wait(ctx, q, 300*time.Millisecond)
	if d != nil || err != nil {
		t.Fatalf("Wait on an empty queue = %v, %v", d, err)
	}
	if el := time.Since(start); el < 290*time.Millisecond {
		t.Fatalf("Wait returned after %v, before its timeout", el)
	}

	got := make(chan *mcamqp.Delivery, 1)
	go func() {
		d, _ := c.Wait(ctx, q, 10*time.Second)
		got <- d
	}()
	publish(t, c, q, "late")
	select {
	case d := <-got:
		if d == nil || string(d.Body) != "late" {
			t.Fatalf("Wait got %v", d)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return within 5s of the publish")
	}
}

// Reservations that clients hold count against the consumer's window. A
// window full of them must not starve the next waiter while the queue has
// messages: the consumer is retired and a fresh one serves the waiter.
func TestWaitersNotStarvedByHeldDeliveries(t *testing.T) {
	c := startClient(t, mcamqp.Options{Prefetch: 2})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)
	var held []*mcamqp.Delivery
	for i := range 5 {
		body := fmt.Sprintf("m%d", i)
		var wg sync.WaitGroup
		var d *mcamqp.Delivery
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, _ = c.Wait(ctx, q, 10*time.Second)
		}()
		// Publish only once the waiter is (very likely) waiting; the
		// outcome does not depend on it either way.
		publish(t, c, q, body)
		wg.Wait()
		if d == nil {
			t.Fatalf("waiter %d got nothing although %q was in the queue (%d held)", i, body, len(held))
		}
		held = append(held, d)
	}
	seen := map[string]bool{}
	for _, d := range held {
		seen[string(d.Body)] = true
		if err := d.Ack(); err != nil {
			t.Fatalf("Ack %q: %v", d.Body, err)
		}
	}
	if len(seen) != 5 {
		t.Fatalf("got %v, want m0..m4 once each", seen)
	}
}
