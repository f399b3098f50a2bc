package amqp_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// What the ack writer must never do, shown on the real broker: a multiple
// ack that names a tag already acked is a channel error (406 unknown
// delivery tag), and the channel's unacked deliveries go back.
func TestAckMultipleOfSettledTag(t *testing.T) {
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	pub := testbroker.Channel(t)
	for i := range 3 {
		if err := pub.Publish("", q, false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	ch := testbroker.Channel(t)
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	var tags []uint64
	testbroker.Eventually(t, 5*time.Second, "three gets", func() bool {
		m, ok, err := ch.Get(q, false)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			tags = append(tags, m.DeliveryTag)
		}
		return len(tags) == 3
	})
	if err := ch.Ack(tags[1], false); err != nil {
		t.Fatal(err)
	}
	if err := ch.Ack(tags[1], true); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if err == nil || err.Code != amqp091.PreconditionFailed {
			t.Fatalf("channel closed with %v, want 406", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the broker accepted a multiple ack of a settled tag")
	}
	testbroker.Eventually(t, 5*time.Second, "two messages back", func() bool {
		return testbroker.QueueDepth(t, q) == 2
	})
}

// Acks of one channel arrive out of order, one delivery is held past the
// writer's hold and one is requeued in the middle: the writer coalesces
// what it may into multiple acks, and in the end exactly the requeued
// message is back, with no channel error on the way.
func TestOutOfOrderAcksCoalesceSafely(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	const n = 300
	ds := publishAndGet(t, c, q, n)
	// The held delivery is not the first: the acks below it form runs.
	held, requeued := ds[n/4], ds[n/2]
	if err := requeued.Requeue(); err != nil {
		t.Fatal(err)
	}
	var rest []*mcamqp.Delivery
	for _, d := range ds {
		if d != held && d != requeued {
			rest = append(rest, d)
		}
	}
	rand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(rest); i += 8 {
				if err := rest[i].Ack(); err != nil {
					t.Errorf("Ack %q: %v", rest[i].Body, err)
				}
			}
		}()
	}
	wg.Wait()
	// The acks behind the held delivery go out one by one once held
	// long enough; then the held one's ack joins the settled run.
	testbroker.Eventually(t, 10*time.Second, "every ack but the held one's sent", func() bool {
		return testbroker.Unacked(t, q) == 1
	})
	if err := held.Ack(); err != nil {
		t.Fatal(err)
	}
	if held.Stale() {
		t.Fatal("the channel closed: an ack was refused")
	}
	c.Close()
	// Close sends what is queued; anything left unacked would be back now.
	if got := testbroker.QueueDepth(t, q); got != 1 {
		t.Fatalf("%d messages in the queue after Close, want only the requeued one", got)
	}
	m := rawGet(t, testbroker.Channel(t), q)
	if string(m.Body) != string(requeued.Body) {
		t.Fatalf("back in the queue: %q, want the requeued %q", m.Body, requeued.Body)
	}
}

// publishAndGet publishes messages "0" to n-1 to queue and gets them all,
// one after the other (so on one get channel), unsettled.
func publishAndGet(t *testing.T, c *mcamqp.Client, queue string, n int) []*mcamqp.Delivery {
	t.Helper()
	for i := range n {
		publish(t, c, queue, fmt.Sprint(i))
	}
	ctx := ctxT(t)
	ds := make([]*mcamqp.Delivery, n)
	for i := range n {
		d, err := c.Get(ctx, queue)
		if err != nil || d == nil {
			t.Fatalf("Get %d: %v, %v", i, d, err)
		}
		ds[i] = d
	}
	return ds
}
