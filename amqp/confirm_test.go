package amqp_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// Each publish gets the broker's verdict for its own delivery tag. A full
// reject-publish queue nacks a publish at once while acks of earlier tags
// (to a healthy queue, on the same channel) come later as one
// basic.ack(multiple): amqp091-go's NotifyPublish bookkeeping re-confirms a
// parked nack with the multiple's verdict, which made the gateway answer
// STORED for hundreds of messages the broker had refused. Both queues, and
// a routing key that reaches no queue (returned, then acked), share one
// confirm channel here, and many publishers interleave on it.
func TestPublishVerdictPerTagWithInterleavedAcksAndNacks(t *testing.T) {
	c := startClient(t, mcamqp.Options{PublishChannels: 1})
	full := testbroker.Name(t, "full")
	healthy := testbroker.Name(t, "healthy")
	nowhere := testbroker.Name(t, "nowhere")
	declareQueue(t, full, amqp091.Table{"x-max-length": int64(1), "x-overflow": "reject-publish"})
	declareQueue(t, healthy, nil)
	publish(t, c, full, "the only one")
	ctx := ctxT(t)

	const publishers, each = 16, 240
	var (
		mu                     sync.Mutex
		fullAcked, healthyLost int
		healthyStored          int
		nowhereStored          int
		other                  []error
	)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q := [3]string{full, healthy, nowhere}[(p+i)%3]
				err := c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("x")})
				mu.Lock()
				switch {
				case q == full && err == nil:
					fullAcked++
				case q == full && errors.Is(err, mcamqp.ErrNacked):
				case q == healthy && err == nil:
					healthyStored++
				case q == healthy && errors.Is(err, mcamqp.ErrNacked):
					healthyLost++
				case q == nowhere && errors.Is(err, mcamqp.ErrUnroutable):
				case q == nowhere && err == nil:
					nowhereStored++
				default:
					other = append(other, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(other) > 0 {
		t.Errorf("%d publishes failed otherwise, first: %v", len(other), other[0])
	}
	if fullAcked > 0 {
		t.Errorf("%d publishes to the full reject-publish queue were reported confirmed (the broker nacked every one)", fullAcked)
	}
	if nowhereStored > 0 {
		t.Errorf("%d publishes that no queue could take were reported confirmed and routed", nowhereStored)
	}
	if healthyLost > 0 {
		t.Errorf("%d publishes to the healthy queue were reported nacked", healthyLost)
	}
	if got := testbroker.QueueDepth(t, full); got != 1 {
		t.Errorf("full queue holds %d messages, want 1", got)
	}
	if got := testbroker.QueueDepth(t, healthy); got != healthyStored {
		t.Errorf("healthy queue holds %d messages, %d publishes were confirmed", got, healthyStored)
	}
	t.Logf("%d publishes to the healthy queue confirmed, %d to the full one nacked, %d returned", healthyStored, publishers*each/3, publishers*each/3)
}

// A publish whose confirm does not come (its queue is stuck) fails alone:
// the channel that it shares with healthy publishes keeps confirming them,
// and none of them is failed with it (each would be retried by its client:
// a duplicate). The stuck one was not lost either: once the queue moves,
// the broker holds it.
func TestConfirmTimeoutFailsOnlyItsPublish(t *testing.T) {
	const confirmTimeout = time.Second
	c := startClient(t, mcamqp.Options{PublishChannels: 1, ConfirmTimeout: confirmTimeout})
	stuck := testbroker.Name(t, "stuck")
	healthy := testbroker.Name(t, "healthy")
	declareQueue(t, stuck, nil)
	declareQueue(t, healthy, nil)
	ctx := ctxT(t)
	resume := testbroker.SuspendQueue(t, stuck)

	var (
		done    atomic.Bool
		stored  atomic.Int64
		mu      sync.Mutex
		failed  []error
		writers sync.WaitGroup
	)
	for range 8 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for !done.Load() {
				if err := c.Publish(ctx, mcamqp.Message{RoutingKey: healthy, Body: []byte("x")}); err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
					continue
				}
				stored.Add(1)
			}
		}()
	}
	start := time.Now()
	err := c.Publish(ctx, mcamqp.Message{RoutingKey: stuck, Body: []byte("slow")})
	took := time.Since(start)
	// Keep publishing past the moment the stuck publish gave up.
	time.Sleep(200 * time.Millisecond)
	done.Store(true)
	writers.Wait()

	if !errors.Is(err, mcamqp.ErrConfirmTimeout) {
		t.Errorf("publish to the stuck queue: %v, want ErrConfirmTimeout", err)
	}
	if took < confirmTimeout || took > confirmTimeout+500*time.Millisecond {
		t.Errorf("the stuck publish gave up after %v, want about %v", took, confirmTimeout)
	}
	if len(failed) > 0 {
		t.Errorf("%d healthy publishes failed with the stuck one, first: %v", len(failed), failed[0])
	}
	if got := testbroker.QueueDepth(t, healthy); got != int(stored.Load()) {
		t.Errorf("healthy queue holds %d, %d publishes were confirmed", got, stored.Load())
	}
	resume()
	testbroker.Eventually(t, 10*time.Second, "the stuck message to reach its queue", func() bool {
		return testbroker.QueueDepth(t, stuck) == 1
	})
	t.Logf("%d healthy publishes confirmed while one waited for a stuck queue", stored.Load())
}

// RabbitMQ's expiry timers stop at 2^32-1 ms, and where it checks an
// expiration it refuses larger values by closing the channel, which would
// fail every publish on it: longer expirations are sent clamped.
func TestPublishClampsExpiration(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	if err := c.Publish(ctxT(t), mcamqp.Message{RoutingKey: q, Expiration: 100 * 24 * time.Hour, Body: []byte("far")}); err != nil {
		t.Fatalf("Publish with a 100-day expiration: %v", err)
	}
	d := rawGet(t, testbroker.Channel(t), q)
	if d.Expiration != "4294967295" {
		t.Errorf("Expiration = %q, want \"4294967295\" (2^32-1 ms)", d.Expiration)
	}
}
