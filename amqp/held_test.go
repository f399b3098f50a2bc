package amqp

import (
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// Deliveries of a channel that died stop counting as held by their queue:
// the broker requeued them. They used to stay counted (a hot queue's
// prefetched deliveries, and a reservation the bridge dropped), and every
// later consumer's window grew by them: after a few dozen faults a hunt's
// queue was fetched 4,096 messages ahead of a client holding one, each
// give-back sent 4,096 nacks, and the fence get behind them outlived the
// RPC timeout, which cost the queue its order. The fetcher could never be
// released either.
func TestChannelLossReleasesWhatItHeld(t *testing.T) {
	c, ctx, q := startWithQueue(t, "heldleak", Options{})
	const total = 1500
	ch := testbroker.Channel(t)
	for i := range total {
		if err := ch.PublishWithContext(ctx, "", q, false, false, amqp091.Publishing{Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	testbroker.Eventually(t, 10*time.Second, "every message in the queue", func() bool { return testbroker.QueueDepth(t, q) == total })

	f := c.fetcher(q)
	acked := 0
	for round := range 4 {
		// Gets close together: the consumer starts and fetches ahead.
		// The first delivery of the round is kept, as a client's
		// reservation would be.
		var kept *Delivery
		testbroker.Eventually(t, 20*time.Second, "the consumer fetched ahead", func() bool {
			d, err := c.Get(ctx, q)
			if err != nil {
				return false // reconnecting after the last round's cut
			}
			switch {
			case d == nil:
			case kept == nil:
				kept = d
			default:
				if err := d.Ack(); err != nil {
					t.Fatalf("ack: %v", err)
				}
				acked++
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			return kept != nil && f.state == stateFlowing && len(f.buf) > 0
		})
		testbroker.MustCloseConnections(t, c.ConnectionName()+" consume")
		testbroker.Eventually(t, 10*time.Second, fmt.Sprintf("round %d: the kept delivery is stale", round), kept.Stale)
		// What the bridge does with a reservation of a channel that died.
		kept.Forget()
	}
	// Nobody holds anything now: once the consumer idles out, nothing
	// counts as held, and every message not acked is back in the queue.
	testbroker.Eventually(t, 20*time.Second, "nothing counted as held", func() bool { return f.held.Load() == 0 })
	testbroker.Eventually(t, 20*time.Second, "every message not acked back in the queue", func() bool {
		return testbroker.QueueDepth(t, q) == total-acked
	})
	// A new consumer's window is the hot prefetch plus what is held and
	// waited for, not what earlier channels took with them.
	window := 0
	testbroker.Eventually(t, 20*time.Second, "a new consumer flows", func() bool {
		d, err := c.Get(ctx, q)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if d != nil {
			if err := d.Ack(); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.state == stateFlowing {
			window = f.cons.window
		}
		return window > 0
	})
	// (Plus a few: acks still on their way to the socket count as held
	// for a moment, and so do the gets in line. Each fault used to add
	// what its channel had fetched ahead, up to a whole window.)
	if max := c.opts.HotPrefetch + 32; window > max {
		t.Errorf("the consumer after the faults has a window of %d, want at most %d", window, max)
	}
}
