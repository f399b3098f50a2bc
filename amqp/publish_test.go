package amqp_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestPublishToQueueIsPersistentWithHeadersAndExpiration(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)

	err := c.Publish(ctx, mcamqp.Message{
		RoutingKey: q,
		Headers:    mcamqp.Table{"x-mc-flags": int64(-42), "origin": "test"},
		Expiration: 90 * time.Second,
		Body:       []byte("hello\r\nworld\x00"),
	})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("no ttl")}); err != nil {
		t.Fatalf("Publish without expiration: %v", err)
	}

	ch := testbroker.Channel(t)
	d := rawGet(t, ch, q)
	if d.DeliveryMode != amqp091.Persistent {
		t.Errorf("DeliveryMode = %d, want 2 (persistent)", d.DeliveryMode)
	}
	if got := d.Headers["x-mc-flags"]; got != int64(-42) {
		t.Errorf("header x-mc-flags = %#v, want int64(-42)", got)
	}
	if got := d.Headers["origin"]; got != "test" {
		t.Errorf("header origin = %#v, want \"test\"", got)
	}
	if string(d.Body) != "hello\r\nworld\x00" {
		t.Errorf("body = %q", d.Body)
	}
	if d.Expiration != "90000" {
		t.Errorf("Expiration = %q, want \"90000\" (ms)", d.Expiration)
	}
	if d.MessageId == "" {
		t.Errorf("MessageId is empty; the client correlates returns by it")
	}

	d2 := rawGet(t, ch, q)
	if string(d2.Body) != "no ttl" || d2.Expiration != "" || d2.DeliveryMode != amqp091.Persistent {
		t.Errorf("second message: body %q expiration %q mode %d; want \"no ttl\", \"\", 2", d2.Body, d2.Expiration, d2.DeliveryMode)
	}
	if d2.MessageId == d.MessageId {
		t.Errorf("two publishes share MessageId %q", d.MessageId)
	}
}

func TestPublishUnroutable(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	missing := testbroker.Name(t, "nobody")
	err := c.Publish(ctxT(t), mcamqp.Message{RoutingKey: missing, Body: []byte("x")})
	if !errors.Is(err, mcamqp.ErrUnroutable) {
		t.Fatalf("Publish to a key with no queue: %v, want ErrUnroutable", err)
	}
	// The channel stays usable.
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	publish(t, c, q, "after return")
}

// Returns and confirms of publishes sharing channels are matched to the
// right publish.
func TestPublishConcurrentRoutableAndUnroutable(t *testing.T) {
	c := startClient(t, mcamqp.Options{PublishChannels: 2})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	missing := testbroker.Name(t, "nobody")
	ctx := ctxT(t)

	const workers, total = 16, 200
	type result struct {
		routable bool
		err      error
	}
	results := make([]result, total)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < total; i += workers {
				routable := (i*7)%3 != 0
				key := missing
				if routable {
					key = q
				}
				err := c.Publish(ctx, mcamqp.Message{RoutingKey: key, Body: fmt.Appendf(nil, "m%d", i)})
				results[i] = result{routable, err}
			}
		})
	}
	wg.Wait()

	routed := 0
	for i, r := range results {
		switch {
		case r.routable && r.err != nil:
			t.Errorf("publish %d (routable): %v, want nil", i, r.err)
		case !r.routable && !errors.Is(r.err, mcamqp.ErrUnroutable):
			t.Errorf("publish %d (unroutable): %v, want ErrUnroutable", i, r.err)
		}
		if r.routable {
			routed++
		}
	}
	var depth int
	testbroker.Eventually(t, 5*time.Second, fmt.Sprintf("%d messages in the queue", routed), func() bool {
		n, found, err := c.QueueDepth(ctx, q)
		if err != nil || !found {
			t.Fatalf("QueueDepth: %d %v %v", n, found, err)
		}
		depth = n
		return n >= routed
	})
	if depth != routed {
		t.Errorf("queue holds %d messages, want %d", depth, routed)
	}
}

func TestPublishNackedByRejectPublishQueue(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "full")
	declareQueue(t, q, amqp091.Table{"x-max-length": int64(1), "x-overflow": "reject-publish"})
	ctx := ctxT(t)

	publish(t, c, q, "first")
	for i := range 2 {
		err := c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("second")})
		if !errors.Is(err, mcamqp.ErrNacked) {
			t.Fatalf("publish %d to a full reject-publish queue: %v, want ErrNacked", i+2, err)
		}
	}

	// The client keeps working: other queues, and this one once it has room.
	other := testbroker.Name(t, "other")
	declareQueue(t, other, nil)
	publish(t, c, other, "elsewhere")
	if err := c.EnsureQueue(ctx, mcamqp.QueueSpec{Name: q}, true); err != nil {
		t.Fatalf("EnsureQueue: %v", err)
	}
	d, err := c.Get(ctx, q)
	if err != nil || d == nil {
		t.Fatalf("Get: %v %v", d, err)
	}
	if string(d.Body) != "first" {
		t.Errorf("queue head = %q, want \"first\" (the nacked one must not be there)", d.Body)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	publish(t, c, q, "third")
}

// A publish to a missing exchange makes the broker close the channel; the
// slot opens a new one and later publishes succeed.
func TestPublishMissingExchangeThenRecovers(t *testing.T) {
	c := startClient(t, mcamqp.Options{PublishChannels: 1})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	missingEx := testbroker.Name(t, "noexchange")
	ctx := ctxT(t)

	start := time.Now()
	err := c.Publish(ctx, mcamqp.Message{Exchange: missingEx, RoutingKey: q, Body: []byte("lost")})
	if err == nil || errors.Is(err, mcamqp.ErrUnroutable) || errors.Is(err, mcamqp.ErrNacked) {
		t.Fatalf("Publish to a missing exchange: %v, want an unknown-outcome error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Publish to a missing exchange took %v", d)
	}
	t.Logf("publish to a missing exchange: %v", err)

	testbroker.Eventually(t, 10*time.Second, "a publish to succeed again", func() bool {
		return c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("ok")}) == nil
	})
	for range 3 {
		publish(t, c, q, "ok")
	}
	if err := c.Ready(); err != nil {
		t.Errorf("Ready after a channel error: %v", err)
	}
}
