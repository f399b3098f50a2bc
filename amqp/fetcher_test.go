package amqp_test

import (
	"fmt"
	"sort"
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
	const n = 2000
	held := publishAndGet(t, c, q, n)
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

// A busy classic queue the client declared is served by a prefetching
// consumer: many concurrent gets receive every message exactly once, the
// broker sees the consumer while the gets run, and once the queue is empty
// a get answers the miss without waiting for the consumer each time. (A
// get may miss a message that the AMQP library has received but the pump
// has not yet moved to the line when the machine is very busy; the next
// get has it. The getters go on until they have seen every message.)
func TestHotQueuePrefetchesAndMissesPromptly(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	ctx := ctxT(t)
	if err := c.EnsureQueue(ctx, mcamqp.QueueSpec{Name: q}, false); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := range n {
		publish(t, c, q, fmt.Sprint(i))
	}
	var mu sync.Mutex
	seen := make(map[string]int)
	var consumers, falseMisses int
	var wg sync.WaitGroup
	deadline := time.Now().Add(20 * time.Second)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				d, err := c.Get(ctx, q)
				if err != nil {
					t.Errorf("Get: %v", err)
					return
				}
				if d == nil {
					mu.Lock()
					done := len(seen) == n
					if !done {
						falseMisses++
					}
					mu.Unlock()
					if done || time.Now().After(deadline) {
						return
					}
					continue
				}
				mu.Lock()
				seen[string(d.Body)]++
				got := len(seen)
				mu.Unlock()
				if got == n/2 {
					// Exactly one get is the n/2th.
					qi, err := testbroker.Channel(t).QueueDeclarePassive(q, true, false, false, false, nil)
					if err != nil {
						t.Errorf("passive declare: %v", err)
					}
					mu.Lock()
					consumers = qi.Consumers
					mu.Unlock()
				}
				if err := d.Ack(); err != nil {
					t.Errorf("Ack: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if k := seen[fmt.Sprint(i)]; k != 1 {
			t.Fatalf("message %d received %d times", i, k)
		}
	}
	if consumers != 1 {
		t.Errorf("broker saw %d consumers on the busy queue, want the prefetching one", consumers)
	}
	if falseMisses > n/100 {
		t.Errorf("%d gets missed while messages were left", falseMisses)
	}
	t.Logf("%d gets missed a message on its way", falseMisses)
	// Misses of the emptied, still hot queue: each asks the broker at once
	// (basic.get, then a short grace), none waits out the consumer's
	// flow wait (20 ms).
	const misses = 10
	start := time.Now()
	for range misses {
		if d, err := c.Get(ctx, q); d != nil || err != nil {
			t.Fatalf("Get on the emptied queue = %v, %v", d, err)
		}
	}
	if el := time.Since(start); el > misses*20*time.Millisecond {
		t.Errorf("%d misses took %v: they wait for the consumer", misses, el)
	}
}

// Hundreds of workers polling one busy queue: each get keeps its place in
// line while messages are ready, so none misses while the queue still
// holds messages for it, and every message is handed out once. Gets that
// gave up after 20 ms in line answered 137 false misses here at 400
// workers, and 5,143 at 1,000 (shares from 4 to 140 messages a worker,
// against 9 to 11 now): each then asked again from the end of the line.
//
// Under the race detector, a get gave up early here 275 times before the
// line learnt to wait 20 ms, not 2, once it had been moving (the pump
// pauses that long between two hand-outs on a busy machine).
func TestManyGettersKeepTheirPlace(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "line")
	ctx := ctxT(t)
	if err := c.EnsureQueue(ctx, mcamqp.QueueSpec{Name: q}, false); err != nil {
		t.Fatal(err)
	}
	const n, workers = 6000, 500
	for i := range n {
		publish(t, c, q, fmt.Sprint(i))
	}
	var mu sync.Mutex
	seen := make(map[string]int)
	var falseMisses int
	var missTimes []time.Duration
	done := make([]int, workers)
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				d, err := c.Get(ctx, q)
				took := time.Since(t0)
				if err != nil {
					t.Errorf("Get: %v", err)
					return
				}
				mu.Lock()
				if d == nil {
					finished := len(seen) == n
					// A get may wait 250 ms in line at most (lineMax):
					// on a machine that slow, a miss after it is the
					// bound at work, not a get giving up early.
					if !finished && took < 200*time.Millisecond {
						falseMisses++
						missTimes = append(missTimes, took)
					}
					mu.Unlock()
					if finished {
						return
					}
					continue
				}
				seen[string(d.Body)]++
				done[w]++
				mu.Unlock()
				if err := d.Ack(); err != nil {
					t.Errorf("Ack: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if k := seen[fmt.Sprint(i)]; k != 1 {
			t.Fatalf("message %d received %d times", i, k)
		}
	}
	sort.Slice(missTimes, func(i, j int) bool { return missTimes[i] < missTimes[j] })
	if len(missTimes) > 0 {
		t.Logf("miss times: min %v median %v max %v", missTimes[0], missTimes[len(missTimes)/2], missTimes[len(missTimes)-1])
	}
	sort.Ints(done)
	t.Logf("%d false misses; per worker: least %d, median %d, most %d", falseMisses, done[0], done[workers/2], done[workers-1])
	if falseMisses > n/200 {
		t.Errorf("%d gets missed while the queue held messages", falseMisses)
	}
	// Served in arrival order, each worker's share is about the same.
	if med := done[workers/2]; done[0] < med/2 || done[workers-1] > 3*med {
		t.Errorf("uneven shares: least %d, median %d, most %d messages a worker", done[0], med, done[workers-1])
	}
}
