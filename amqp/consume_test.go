package amqp_test

import (
	"errors"
	"testing"
	"time"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestGetEmptyQueue(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	d, err := c.Get(ctxT(t), q)
	if d != nil || err != nil {
		t.Fatalf("Get on an empty queue = %v, %v; want nil, nil", d, err)
	}
}

func TestGetAckRequeueSettleOnce(t *testing.T) {
	// One get channel, so that the unacked message of the end is on the
	// same channel as the acked one.
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)
	publish(t, c, q, "a")
	publish(t, c, q, "b")
	publish(t, c, q, "c")

	// Get → Ack.
	d, err := c.Get(ctx, q)
	if err != nil || d == nil {
		t.Fatalf("Get: %v, %v", d, err)
	}
	if string(d.Body) != "a" || d.Redelivered || d.Queue != q || d.MessageID == "" {
		t.Errorf("delivery = body %q redelivered %v queue %q id %q", d.Body, d.Redelivered, d.Queue, d.MessageID)
	}
	if d.Stale() {
		t.Errorf("fresh delivery is stale")
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := d.Ack(); !errors.Is(err, mcamqp.ErrSettled) {
		t.Errorf("second Ack: %v, want ErrSettled", err)
	}
	if err := d.Requeue(); !errors.Is(err, mcamqp.ErrSettled) {
		t.Errorf("Requeue after Ack: %v, want ErrSettled", err)
	}

	// Get → Requeue → the next Get has it again, redelivered.
	d, err = c.Get(ctx, q)
	if err != nil || d == nil || string(d.Body) != "b" {
		t.Fatalf("Get: %v, %v", d, err)
	}
	if err := d.Requeue(); err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	if err := d.Ack(); !errors.Is(err, mcamqp.ErrSettled) {
		t.Errorf("Ack after Requeue: %v, want ErrSettled", err)
	}
	d, err = c.Get(ctx, q)
	if err != nil || d == nil {
		t.Fatalf("Get after Requeue: %v, %v", d, err)
	}
	if string(d.Body) != "b" || !d.Redelivered {
		t.Errorf("after Requeue: body %q redelivered %v; want \"b\", true", d.Body, d.Redelivered)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}

	// The last one stays reserved (unacked): not ready.
	last, err := c.Get(ctx, q)
	if err != nil || last == nil || string(last.Body) != "c" {
		t.Fatalf("Get: %v, %v", last, err)
	}
	if n, found, err := c.QueueDepth(ctx, q); n != 0 || !found || err != nil {
		t.Errorf("QueueDepth with everything acked or reserved = %d, %v, %v; want 0, true, nil", n, found, err)
	}
	if d, err := c.Get(ctx, q); d != nil || err != nil {
		t.Errorf("Get with everything reserved = %v, %v; want nil, nil", d, err)
	}

	// Closing the client requeues the reservation, and only it: the acked
	// ones are gone for good.
	c.Close()
	if err := last.Ack(); !errors.Is(err, mcamqp.ErrStale) {
		t.Errorf("Ack after Close: %v, want ErrStale", err)
	}
	if !last.Stale() {
		t.Errorf("delivery not stale after Close")
	}
	ch := testbroker.Channel(t)
	m := rawGet(t, ch, q)
	if string(m.Body) != "c" || !m.Redelivered {
		t.Errorf("after Close the queue holds %q redelivered %v; want \"c\", true", m.Body, m.Redelivered)
	}
	if m, ok, err := ch.Get(q, true); ok || err != nil {
		t.Errorf("an acked message came back: %q %v", m.Body, err)
	}
	if _, err := c.Get(ctx, q); !errors.Is(err, mcamqp.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if err := c.Publish(ctx, mcamqp.Message{RoutingKey: q}); !errors.Is(err, mcamqp.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
}

func TestGetAfterAckEmptiesQueue(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)
	publish(t, c, q, "x")
	if n, found, err := c.QueueDepth(ctx, q); n != 1 || !found || err != nil {
		t.Fatalf("QueueDepth = %d, %v, %v; want 1, true, nil", n, found, err)
	}
	d, err := c.Get(ctx, q)
	if err != nil || d == nil {
		t.Fatalf("Get: %v, %v", d, err)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if n, found, err := c.QueueDepth(ctx, q); n != 0 || !found || err != nil {
		t.Errorf("QueueDepth after Ack = %d, %v, %v; want 0, true, nil", n, found, err)
	}
	if d, err := c.Get(ctx, q); d != nil || err != nil {
		t.Errorf("Get after Ack = %v, %v; want nil, nil", d, err)
	}
}

// The consume connection dies under a reservation: the delivery turns
// stale, is never acked, is back in the queue, and the client reconnects.
func TestStaleDeliveryAfterConsumeConnectionClosed(t *testing.T) {
	rec := &recorder{}
	name := uniqueConnName()
	c := startClient(t, mcamqp.Options{ConnectionName: name, Observer: rec})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)
	publish(t, c, q, "reserved")

	d, err := c.Get(ctx, q)
	if err != nil || d == nil {
		t.Fatalf("Get: %v, %v", d, err)
	}
	mark := len(rec.snapshot())
	closeBrokerConnections(t, name, mcamqp.RoleConsume)

	testbroker.Eventually(t, 10*time.Second, "the delivery to turn stale", d.Stale)
	if err := d.Ack(); !errors.Is(err, mcamqp.ErrStale) {
		t.Fatalf("Ack of a stale delivery: %v, want ErrStale", err)
	}
	if err := d.Ack(); !errors.Is(err, mcamqp.ErrSettled) {
		t.Errorf("second Ack of a stale delivery: %v, want ErrSettled", err)
	}

	// The broker requeued it.
	m := rawGet(t, testbroker.Channel(t), q)
	if string(m.Body) != "reserved" || !m.Redelivered {
		t.Errorf("requeued message: %q redelivered %v; want \"reserved\", true", m.Body, m.Redelivered)
	}

	// The client reconnects by itself.
	testbroker.Eventually(t, 10*time.Second, "the observer to hear of the reconnect", func() bool {
		down := rec.index("up consume 0 false", mark)
		return down >= 0 && rec.index("up consume 0 true", down) >= 0 &&
			rec.index("reconnected consume", down) >= 0
	})
	testbroker.Eventually(t, 10*time.Second, "Ready", func() bool { return c.Ready() == nil })
	if rec.index("deliveries lost", mark) < 0 {
		t.Errorf("observer never heard DeliveriesLost; events: %q", rec.snapshot()[mark:])
	}
	if rec.index("up publish 0 false", mark) >= 0 || rec.index("reconnected publish", 0) >= 0 {
		t.Errorf("the publish connection went down with the consume one; events: %q", rec.snapshot())
	}

	publish(t, c, q, "again")
	d, err = c.Get(ctx, q)
	if err != nil || d == nil || string(d.Body) != "again" {
		t.Fatalf("Get after reconnect: %v, %v", d, err)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack after reconnect: %v", err)
	}
	if n, found, err := c.QueueDepth(ctx, q); n != 0 || !found || err != nil {
		t.Errorf("QueueDepth = %d, %v, %v; want 0, true, nil", n, found, err)
	}
}

// A basic.get on a missing queue makes the broker close that channel: Get
// reports ErrQueueNotFound (not a miss), a reservation on another queue is
// untouched (queues never share channels), and the client goes on working.
func TestGetMissingQueueThenRecovers(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	missing := testbroker.Name(t, "missing")
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)
	publish(t, c, q, "held")
	publish(t, c, q, "x")
	held, err := c.Get(ctx, q)
	if err != nil || held == nil {
		t.Fatalf("Get: %v, %v", held, err)
	}
	d, err := c.Get(ctx, missing)
	if !errors.Is(err, mcamqp.ErrQueueNotFound) || d != nil {
		t.Fatalf("Get on a missing queue = %v, %v; want ErrQueueNotFound", d, err)
	}
	if held.Stale() {
		t.Fatal("a failed get on another queue made this reservation stale")
	}
	if err := held.Ack(); err != nil {
		t.Fatalf("Ack of the reservation on the other queue: %v", err)
	}
	d, err = c.Get(ctx, q)
	if err != nil || d == nil {
		t.Fatalf("Get after the failure: %v, %v", d, err)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if n, found, err := c.QueueDepth(ctx, missing); n != 0 || found || err != nil {
		t.Errorf("QueueDepth of the missing queue = %d, %v, %v; Get must not create it", n, found, err)
	}
}
