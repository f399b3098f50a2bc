package amqp_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
)

// The publish connection dies while publishes flow: every publish returns
// promptly (well before the confirm timeout), none is reported stored
// without being in the queue, and publishing resumes after the reconnect.
func TestPublishConnectionClosed(t *testing.T) {
	rec := &recorder{}
	name := uniqueConnName()
	const confirmTimeout = 10 * time.Second
	c := startClient(t, mcamqp.Options{ConnectionName: name, Observer: rec, ConfirmTimeout: confirmTimeout})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)

	var (
		stop                  atomic.Bool
		stored, failed, total atomic.Int64
		mu                    sync.Mutex
		slowest               time.Duration
		unexpected            []error
		wg                    sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				start := time.Now()
				err := c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("m")})
				took := time.Since(start)
				total.Add(1)
				mu.Lock()
				slowest = max(slowest, took)
				if err != nil && !errors.Is(err, mcamqp.ErrNotConnected) && !errors.Is(err, mcamqp.ErrChannelClosed) {
					unexpected = append(unexpected, err)
				}
				mu.Unlock()
				if err == nil {
					stored.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	testbroker.Eventually(t, 10*time.Second, "publishes to flow", func() bool { return stored.Load() > 20 })
	mark := len(rec.snapshot())
	closeBrokerConnections(t, name, mcamqp.RolePublish)
	testbroker.Eventually(t, 15*time.Second, "the publish connection to come back", func() bool {
		down := rec.index("up publish 0 false", mark)
		return down >= 0 && rec.index("reconnected publish", down) >= 0
	})
	after := stored.Load()
	testbroker.Eventually(t, 10*time.Second, "publishes to succeed after the reconnect", func() bool {
		return stored.Load() > after+20
	})
	stop.Store(true)
	wg.Wait()

	t.Logf("%d publishes: %d stored, %d failed; slowest %v", total.Load(), stored.Load(), failed.Load(), slowest)
	if len(unexpected) > 0 {
		t.Errorf("unexpected publish errors: %v", unexpected)
	}
	if slowest > 3*time.Second {
		t.Errorf("a publish took %v across the connection loss; it must fail fast, not wait for the %v confirm timeout", slowest, confirmTimeout)
	}
	if rec.index("up consume 0 false", 0) >= 0 {
		t.Errorf("the consume connection went down with the publish one: %q", rec.snapshot())
	}
	// Every publish reported stored is in the queue (failed ones may be
	// too: their outcome is unknown).
	n, found, err := c.QueueDepth(ctx, q)
	if err != nil || !found {
		t.Fatalf("QueueDepth: %v %v", found, err)
	}
	if int64(n) < stored.Load() || int64(n) > total.Load() {
		t.Errorf("queue holds %d messages; %d publishes were confirmed, %d attempted", n, stored.Load(), total.Load())
	}
}

// A single publish right after the publish connection is killed returns
// promptly, with either success (already reconnected) or a connection
// error.
func TestPublishRightAfterConnectionClosed(t *testing.T) {
	name := uniqueConnName()
	c := startClient(t, mcamqp.Options{ConnectionName: name, ConfirmTimeout: 10 * time.Second})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)
	closeBrokerConnections(t, name, mcamqp.RolePublish)
	start := time.Now()
	err := c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("x")})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Publish after the connection was closed took %v (err %v)", took, err)
	}
	if err != nil && !errors.Is(err, mcamqp.ErrNotConnected) && !errors.Is(err, mcamqp.ErrChannelClosed) {
		t.Errorf("Publish after the connection was closed: %v", err)
	}
	testbroker.Eventually(t, 10*time.Second, "a publish to succeed", func() bool {
		return c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("y")}) == nil
	})
}

const secretURL = "amqp://guest:s3cr3t-pw@127.0.0.1:1/"

func TestStartWithUnreachableBroker(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	c := mcamqp.New(mcamqp.Options{
		URLs:           []string{secretURL},
		ConnectionName: uniqueConnName(),
		MinBackoff:     50 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start with an unreachable broker: %v, want nil (it keeps trying)", err)
	}
	ready := c.Ready()
	if ready == nil {
		t.Fatalf("Ready is nil without a broker")
	}
	if strings.Contains(ready.Error(), "s3cr3t-pw") {
		t.Errorf("Ready leaks the password: %v", ready)
	}
	t.Logf("Ready: %v", ready)

	start := time.Now()
	if err := c.Publish(ctx, mcamqp.Message{RoutingKey: "x", Body: []byte("x")}); !errors.Is(err, mcamqp.ErrNotConnected) {
		t.Errorf("Publish while not connected: %v, want ErrNotConnected", err)
	}
	if _, err := c.Get(ctx, "x"); !errors.Is(err, mcamqp.ErrNotConnected) {
		t.Errorf("Get while not connected: %v, want ErrNotConnected", err)
	}
	if _, _, err := c.QueueDepth(ctx, "x"); !errors.Is(err, mcamqp.ErrNotConnected) {
		t.Errorf("QueueDepth while not connected: %v, want ErrNotConnected", err)
	}
	if err := c.EnsureQueue(ctx, mcamqp.QueueSpec{Name: "x"}, true); !errors.Is(err, mcamqp.ErrNotConnected) {
		t.Errorf("EnsureQueue while not connected: %v, want ErrNotConnected", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("calls while not connected took %v", took)
	}
	// Still failing after a few retries, still without the password.
	testbroker.Eventually(t, 5*time.Second, "a few retries", func() bool { return time.Since(start) > 300*time.Millisecond })
	if r := c.Ready(); r == nil || strings.Contains(r.Error(), "s3cr3t-pw") {
		t.Errorf("Ready after retries: %v", r)
	}

	start = time.Now()
	c.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v", took)
	}
	goleak.VerifyNone(t, ignore)
}

func TestStartWalksURLList(t *testing.T) {
	// Either starting point must end up connected: the list is walked.
	for range 3 {
		c := startClient(t, mcamqp.Options{URLs: []string{secretURL, testbroker.URL}})
		q := testbroker.Name(t, "q")
		declareQueue(t, q, nil)
		publish(t, c, q, "via the good node")
		d, err := c.Get(ctxT(t), q)
		if err != nil || d == nil {
			t.Fatalf("Get: %v, %v", d, err)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// A memory alarm blocks publishing: a publish written before the client
// heard of it gets no confirm (ErrConfirmTimeout at ConfirmTimeout, or
// ErrBlocked if the block was known first), publishes after it fail fast
// with ErrBlocked, consuming still works, and all is well once the alarm
// clears.
func TestMemoryAlarmBlocksPublishing(t *testing.T) {
	rec := &recorder{}
	const confirmTimeout = 1500 * time.Millisecond
	logs := &testserve.LogBuffer{}
	c := startClient(t, mcamqp.Options{
		Observer: rec, ConfirmTimeout: confirmTimeout, PublishChannels: 1,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	ctx := ctxT(t)
	publish(t, c, q, "before")

	// The alarm blocks every publisher on this binary's node: MemoryAlarm
	// holds it exclusively and restores the watermark in a cleanup that
	// always runs.
	clearAlarm := testbroker.MemoryAlarm(t)

	// The first publishes (several in flight on the one channel): either
	// the client heard of the block already, or they are written and their
	// confirms never come while the alarm lasts.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			start := time.Now()
			err := c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("during")})
			took := time.Since(start)
			t.Logf("publish under the alarm: %v after %v", err, took)
			switch {
			case errors.Is(err, mcamqp.ErrBlocked):
				if took > 100*time.Millisecond {
					t.Errorf("ErrBlocked took %v", took)
				}
			case errors.Is(err, mcamqp.ErrConfirmTimeout):
				if took < confirmTimeout || took > confirmTimeout+time.Second {
					t.Errorf("ErrConfirmTimeout after %v, want about %v", took, confirmTimeout)
				}
			default:
				t.Errorf("publish under the alarm: %v, want ErrBlocked or ErrConfirmTimeout", err)
			}
		})
	}
	wg.Wait()
	t.Logf("events: %q", rec.snapshot())

	testbroker.Eventually(t, 10*time.Second, "the client to hear connection.blocked", func() bool {
		return rec.index("blocked true", 0) >= 0
	})
	// Not ready while every set would fail: /readyz takes the gateway out
	// of a load balancer's rotation.
	if err := c.Ready(); !errors.Is(err, mcamqp.ErrBlocked) {
		t.Errorf("Ready while blocked: %v, want ErrBlocked", err)
	}
	start := time.Now()
	for range 5 {
		if err := c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("blocked")}); !errors.Is(err, mcamqp.ErrBlocked) {
			t.Errorf("Publish while blocked: %v, want ErrBlocked", err)
		}
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("5 publishes while blocked took %v", took)
	}
	// Acks still flow on the consume connection.
	d, err := c.Get(ctx, q)
	if err != nil || d == nil || string(d.Body) != "before" {
		t.Fatalf("Get under the alarm: %v, %v", d, err)
	}
	if err := d.Ack(); err != nil {
		t.Errorf("Ack under the alarm: %v", err)
	}

	clearAlarm()
	testbroker.Eventually(t, 10*time.Second, "the client to hear the unblock", func() bool {
		return rec.index("blocked false", rec.index("blocked true", 0)) >= 0
	})
	testbroker.Eventually(t, 10*time.Second, "a publish to succeed after the alarm", func() bool {
		return c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("after")}) == nil
	})
	// Once publishing works again it keeps working, and the channel whose
	// confirms timed out was replaced once: the fresh channel is not torn
	// down again because several publishes timed out on the old one.
	for i := range 50 {
		if err := c.Publish(ctx, mcamqp.Message{RoutingKey: q, Body: []byte("after")}); err != nil {
			t.Errorf("publish %d after the alarm: %v", i, err)
		}
	}
	if n := strings.Count(logs.String(), "replacing channel"); n > 1 {
		t.Errorf("the publish channel was replaced %d times for one alarm; log:\n%s", n, logs.String())
	}
	if err := c.Ready(); err != nil {
		t.Errorf("Ready after the alarm: %v", err)
	}
}
