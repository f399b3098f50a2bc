package amqp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestEnsureQueueUsesOperatorQueueAsIs(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "operator")
	declareQueue(t, q, amqp091.Table{"x-max-length": int64(5)})
	ctx := ctxT(t)

	if err := c.EnsureQueue(ctx, mcamqp.QueueSpec{Name: q}, true); err != nil {
		t.Fatalf("EnsureQueue(passiveFirst) on an operator's queue: %v", err)
	}
	// It was used as is: still the operator's arguments.
	ch := testbroker.Channel(t)
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp091.Table{"x-max-length": int64(5)}); err != nil {
		t.Fatalf("the queue's arguments changed: %v", err)
	}

	// Declaring it with other arguments is refused, with a TopologyError.
	c.Forget(q)
	err := c.EnsureQueue(ctx, mcamqp.QueueSpec{Name: q, Origin: "config line 7"}, false)
	var terr *mcamqp.TopologyError
	if !errors.As(err, &terr) {
		t.Fatalf("EnsureQueue(declare) with other arguments: %v, want *TopologyError", err)
	}
	if !strings.Contains(err.Error(), q) || !strings.Contains(err.Error(), "config line 7") {
		t.Errorf("error %q does not name the queue and its origin", err)
	}
	// The refusal closed only a throwaway channel.
	if err := c.Ready(); err != nil {
		t.Errorf("Ready after a refused declaration: %v", err)
	}
	publish(t, c, q, "still works")
	if d, err := c.Get(ctx, q); err != nil || d == nil {
		t.Errorf("Get after a refused declaration: %v, %v", d, err)
	}
}

func TestEnsureQueueDeclaresMissingQueueDurable(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "auto")
	ctx := ctxT(t)
	spec := mcamqp.QueueSpec{Name: q, MaxLength: 10, Overflow: "reject-publish", MessageTTL: time.Minute}
	if err := c.EnsureQueue(ctx, spec, true); err != nil {
		t.Fatalf("EnsureQueue on a missing queue: %v", err)
	}
	ch := testbroker.Channel(t)
	if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
		t.Fatalf("passive declare after EnsureQueue: %v", err)
	}
	// Equivalent to a durable declaration with exactly these arguments.
	args := amqp091.Table{"x-max-length": int64(10), "x-overflow": "reject-publish", "x-message-ttl": int64(60000)}
	if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
		t.Fatalf("the declared queue is not durable with %v: %v", args, err)
	}
	// Again: a no-op.
	if err := c.EnsureQueue(ctx, spec, false); err != nil {
		t.Errorf("second EnsureQueue: %v", err)
	}
}

func TestQueueDepthNeverCreates(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "missing")
	ctx := ctxT(t)
	n, found, err := c.QueueDepth(ctx, q)
	if n != 0 || found || err != nil {
		t.Fatalf("QueueDepth of a missing queue = %d, %v, %v; want 0, false, nil", n, found, err)
	}
	ch := testbroker.Channel(t)
	_, err = ch.QueueDeclarePassive(q, true, false, false, false, nil)
	var aerr *amqp091.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp091.NotFound {
		t.Fatalf("QueueDepth created the queue (passive declare: %v)", err)
	}

	other := testbroker.Name(t, "present")
	declareQueue(t, other, nil)
	publish(t, c, other, "1")
	publish(t, c, other, "2")
	if n, found, err := c.QueueDepth(ctx, other); n != 2 || !found || err != nil {
		t.Errorf("QueueDepth = %d, %v, %v; want 2, true, nil", n, found, err)
	}
}

func TestStartWithConflictingTopology(t *testing.T) {
	q := testbroker.Name(t, "conflict")
	ex := testbroker.Name(t, "ex")
	conn := testbroker.Dial(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp091.Table{"x-max-length": int64(5)}); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()

	ignore := goleak.IgnoreCurrent()
	c := mcamqp.New(mcamqp.Options{
		URLs:           []string{testbroker.URL},
		ConnectionName: uniqueConnName(),
		MinBackoff:     50 * time.Millisecond,
		Topology: mcamqp.Topology{
			Exchanges: []mcamqp.ExchangeSpec{{Name: ex, Kind: "fanout", Origin: "config line 3"}},
			Queues: []mcamqp.QueueSpec{{
				Name: q, MaxLength: 10, Origin: "config line 12",
				Bindings: []mcamqp.BindingSpec{{Exchange: ex}},
			}},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c.Start(ctx)
	var terr *mcamqp.TopologyError
	if !errors.As(err, &terr) {
		t.Fatalf("Start with a conflicting queue: %v, want *TopologyError", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, `"`+q+`"`) || !strings.Contains(msg, "config line 12") {
		t.Errorf("error %q does not name the queue and its origin", msg)
	}
	t.Logf("Start: %v", err)
	if err := c.Ready(); err == nil {
		t.Errorf("Ready after a failed Start is nil")
	}
	if err := c.Publish(ctx, mcamqp.Message{RoutingKey: q}); !errors.Is(err, mcamqp.ErrClosed) {
		t.Errorf("Publish after a failed Start: %v, want ErrClosed", err)
	}
	c.Close() // idempotent
	goleak.VerifyNone(t, ignore)
}

func TestStartDeclaresTopology(t *testing.T) {
	q := testbroker.Name(t, "billing")
	ex := testbroker.Name(t, "orders")
	c := startClient(t, mcamqp.Options{Topology: mcamqp.Topology{
		Exchanges: []mcamqp.ExchangeSpec{{Name: ex, Kind: "fanout"}},
		Queues: []mcamqp.QueueSpec{{
			Name: q, MaxLength: 100, Overflow: "reject-publish",
			Bindings: []mcamqp.BindingSpec{{Exchange: ex}},
		}},
	}})
	ctx := ctxT(t)
	if err := c.Publish(ctx, mcamqp.Message{Exchange: ex, RoutingKey: "anything", Body: []byte("fan")}); err != nil {
		t.Fatalf("Publish through the declared exchange: %v", err)
	}
	d, err := c.Get(ctx, q)
	if err != nil || d == nil || string(d.Body) != "fan" {
		t.Fatalf("Get from the bound queue: %v, %v", d, err)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
}

// An ended context stops EnsureQueue and QueueDepth before any broker call:
// nothing is declared, and a later call with a live context still declares.
func TestEnsureQueueHonoursContext(t *testing.T) {
	c := startClient(t, mcamqp.Options{})
	q := testbroker.Name(t, "cancelled")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.EnsureQueue(ctx, mcamqp.QueueSpec{Name: q}, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("EnsureQueue with an ended context: %v, want context.Canceled", err)
	}
	if _, _, err := c.QueueDepth(ctx, q); !errors.Is(err, context.Canceled) {
		t.Fatalf("QueueDepth with an ended context: %v, want context.Canceled", err)
	}
	if _, found, err := c.QueueDepth(ctxT(t), q); found || err != nil {
		t.Fatalf("after a cancelled EnsureQueue the queue exists (%v) or QueueDepth failed: %v", found, err)
	}
	if err := c.EnsureQueue(ctxT(t), mcamqp.QueueSpec{Name: q}, true); err != nil {
		t.Fatalf("EnsureQueue after the cancelled one: %v", err)
	}
	if n, found, err := c.QueueDepth(ctxT(t), q); !found || n != 0 || err != nil {
		t.Fatalf("QueueDepth of the declared queue: %d, %v, %v", n, found, err)
	}
}
