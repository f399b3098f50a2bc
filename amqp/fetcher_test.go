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

// Acks go out through a writer; a graceful Close sends every ack that was
// queued before it, so nothing a client was told is acked comes back.
func TestCloseSendsQueuedAcks(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)
	const n = 2000
	for i := range n {
		publish(t, c, q, fmt.Sprint(i))
	}
	var held []*mcamqp.Delivery
	for i := range n {
		d, err := c.Get(ctx, q)
		if err != nil || d == nil {
			t.Fatalf("Get %d: %v, %v", i, d, err)
		}
		held = append(held, d)
	}
	// Ack all at once, from many goroutines, and close right after: the
	// writer is then still busy with them.
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				if err := held[i].Ack(); err != nil {
					t.Errorf("Ack %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	c.Close()
	// An ack lost at close would put its message back at once.
	ch := testbroker.Channel(t)
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if qi.Messages != 0 {
			t.Fatalf("%d acked messages are back in the queue after Close", qi.Messages)
		}
	}
}
