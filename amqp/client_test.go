package amqp_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// These tests talk to a real RabbitMQ node of their own (see internal/testbroker):
// no mocks. Fault injection uses rabbitmqctl.

func TestMain(m *testing.M) {
	testbroker.Main(m)
}

// startClient starts a Client against the test broker with fast reconnects
// and a unique connection name, closed when the test ends.
func startClient(t *testing.T, opts mcamqp.Options) *mcamqp.Client {
	t.Helper()
	if len(opts.URLs) == 0 {
		opts.URLs = []string{testbroker.URL}
	}
	testbroker.MustBePrivate(t, opts.URLs)
	if opts.ConnectionName == "" {
		opts.ConnectionName = uniqueConnName()
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 500 * time.Millisecond
	}
	c := mcamqp.New(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(c.Close)
	testbroker.Eventually(t, 10*time.Second, "client ready", func() bool { return c.Ready() == nil })
	return c
}

func uniqueConnName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "mcbt-" + hex.EncodeToString(b[:])
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// declareQueue declares a durable queue with a raw client, as an operator
// or another application would.
func declareQueue(t *testing.T, name string, args amqp091.Table) {
	t.Helper()
	ch := testbroker.Channel(t)
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		t.Fatalf("raw declare %s: %v", name, err)
	}
}

// rawGet fetches one message with a raw client (auto-ack), polling until
// one is there.
func rawGet(t *testing.T, ch *amqp091.Channel, queue string) amqp091.Delivery {
	t.Helper()
	var d amqp091.Delivery
	testbroker.Eventually(t, 10*time.Second, "a message in "+queue, func() bool {
		m, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("raw get %s: %v", queue, err)
		}
		d = m
		return ok
	})
	return d
}

func publish(t *testing.T, c *mcamqp.Client, queue, body string) {
	t.Helper()
	if err := c.Publish(ctxT(t), mcamqp.Message{RoutingKey: queue, Body: []byte(body)}); err != nil {
		t.Fatalf("Publish to %s: %v", queue, err)
	}
}

// closeBrokerConnections force-closes, from the broker side, the
// connections of this client whose name contains role. It returns how many
// it closed (at least one, or the test fails).
func closeBrokerConnections(t *testing.T, connName string, role mcamqp.Role) int {
	t.Helper()
	return testbroker.MustCloseConnections(t, fmt.Sprintf("%s %s ", connName, role))
}

// recorder is an Observer that remembers every call.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) ConnectionUp(role mcamqp.Role, index int, up bool) {
	r.add(fmt.Sprintf("up %s %d %v", role, index, up))
}
func (r *recorder) Reconnected(role mcamqp.Role) { r.add("reconnected " + string(role)) }
func (r *recorder) Blocked(b bool)               { r.add(fmt.Sprintf("blocked %v", b)) }
func (r *recorder) DeliveriesLost()              { r.add("deliveries lost") }

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// index is the position of the first event e at or after from, or -1.
func (r *recorder) index(e string, from int) int {
	ev := r.snapshot()
	for i := max(from, 0); i < len(ev); i++ {
		if ev[i] == e {
			return i
		}
	}
	return -1
}

func (r *recorder) count(e string) int {
	n := 0
	for _, x := range r.snapshot() {
		if x == e {
			n++
		}
	}
	return n
}

// Once Start returned and Ready is nil, publishing and getting work at
// once: no call may fail because a channel is still being set up.
func TestUsableRightAfterStart(t *testing.T) {
	q := testbroker.Name(t, "q")
	declareQueue(t, q, nil)
	for i := range 5 {
		c := mcamqp.New(mcamqp.Options{URLs: []string{testbroker.URL}, ConnectionName: uniqueConnName()})
		if err := c.Start(ctxT(t)); err != nil {
			t.Fatalf("Start: %v", err)
		}
		if err := c.Ready(); err != nil {
			c.Close()
			t.Fatalf("Ready right after Start: %v", err)
		}
		err := c.Publish(ctxT(t), mcamqp.Message{RoutingKey: q, Body: fmt.Appendf(nil, "%d", i)})
		if err != nil {
			t.Errorf("Publish right after Start: %v", err)
		}
		c2 := mcamqp.New(mcamqp.Options{URLs: []string{testbroker.URL}, ConnectionName: uniqueConnName()})
		if err := c2.Start(ctxT(t)); err != nil {
			t.Fatalf("Start: %v", err)
		}
		d, err := c2.Get(ctxT(t), q)
		if err != nil || d == nil {
			t.Errorf("Get right after Start: %v, %v", d, err)
		} else if err := d.Ack(); err != nil {
			t.Errorf("Ack: %v", err)
		}
		c.Close()
		c2.Close()
	}
}
