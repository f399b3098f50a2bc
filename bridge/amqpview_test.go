package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// The back-office view: what a plain AMQP client (amqp091-go) sees of the
// messages memcache clients store, and what memcache clients see of the
// messages AMQP publishers send.

// avAllBytes is every byte value, with CR LF and a fake END line inside.
func avAllBytes() []byte {
	b := make([]byte, 0, 256+16)
	for i := range 256 {
		b = append(b, byte(i))
	}
	return append(b, "\r\nEND\r\n\r\n"...)
}

// avRawGet fetches one message with basic.get (auto-ack); fails when the
// queue is empty.
func avRawGet(t *testing.T, ch *amqp091.Channel, queue string) amqp091.Delivery {
	t.Helper()
	m, ok, err := ch.Get(queue, true)
	if err != nil {
		t.Fatalf("raw basic.get %s: %v", queue, err)
	}
	if !ok {
		t.Fatalf("raw basic.get %s: queue empty", queue)
	}
	return m
}

// avPublish publishes body to queue through the default exchange as a plain
// AMQP producer would, after declaring the queue durable.
func avPublish(t *testing.T, queue string, headers amqp091.Table, body []byte) {
	t.Helper()
	ch := testbroker.Channel(t)
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatalf("declare %s: %v", queue, err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", queue, true, false, amqp091.Publishing{
		Headers:      headers,
		DeliveryMode: amqp091.Persistent,
		Body:         body,
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if !dc.Wait() {
		t.Fatalf("publish nacked")
	}
	_ = ch.Close()
}

func TestAMQPViewSetIsDurablePersistentMessage(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "view")
	c := g.dial()
	body := avAllBytes()
	c.Do(fmt.Sprintf("set %s 4294967295 0 %d\r\n%s\r\n", q, len(body), body), "STORED\r\n")

	// The queue exists (passive declare) and is durable: redeclaring it
	// durable with no arguments is accepted, non-durable is refused.
	conn := testbroker.Dial(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
		t.Fatalf("passive declare after set: %v", err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatalf("queue is not a plain durable queue: %v", err)
	}
	nd, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	_, err = nd.QueueDeclare(q, false, false, false, false, nil)
	var aerr *amqp091.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp091.PreconditionFailed {
		t.Fatalf("redeclare non-durable: err = %v, want PRECONDITION_FAILED (the queue is durable)", err)
	}

	m := avRawGet(t, ch, q)
	if m.DeliveryMode != amqp091.Persistent {
		t.Errorf("delivery mode %d, want 2 (persistent)", m.DeliveryMode)
	}
	flags, ok := m.Headers["x-mc-flags"].(int64)
	if !ok || flags != 4294967295 {
		t.Errorf("header x-mc-flags = %#v (%T), want int64(4294967295)", m.Headers["x-mc-flags"], m.Headers["x-mc-flags"])
	}
	if string(m.Body) != string(body) {
		t.Errorf("body changed on the way:\n got %q\nwant %q", m.Body, body)
	}
	if m.Expiration != "" {
		t.Errorf("exptime 0 set expiration %q, want none", m.Expiration)
	}
	if m.Redelivered {
		t.Errorf("a fresh message is marked redelivered")
	}

	// Flags 0 are a header too: int64(0).
	c.Do(fmt.Sprintf("set %s 0 0 1\r\nz\r\n", q), "STORED\r\n")
	m = avRawGet(t, ch, q)
	if v, ok := m.Headers["x-mc-flags"].(int64); !ok || v != 0 {
		t.Errorf("flags 0: header x-mc-flags = %#v (%T), want int64(0)", m.Headers["x-mc-flags"], m.Headers["x-mc-flags"])
	}
}

func TestAMQPViewForeignMessagesFlags(t *testing.T) {
	g := startGateway(t, nil)
	c := g.dial()
	cases := []struct {
		name    string
		headers amqp091.Table
		want    uint32
	}{
		{"no headers", nil, 0},
		{"other headers only", amqp091.Table{"x-other": int64(5)}, 0},
		{"string flags", amqp091.Table{"x-mc-flags": "12"}, 0},
		{"int32 flags", amqp091.Table{"x-mc-flags": int32(7)}, 7},
		{"int16 flags", amqp091.Table{"x-mc-flags": int16(300)}, 300},
		{"int64 flags", amqp091.Table{"x-mc-flags": int64(4294967295)}, 4294967295},
		{"float flags", amqp091.Table{"x-mc-flags": float64(3)}, 0},
		{"bool flags", amqp091.Table{"x-mc-flags": true}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := testbroker.Name(t, "foreign")
			body := []byte("from amqp: " + tc.name)
			avPublish(t, q, tc.headers, body)
			c.Do("get "+q+"\r\n", fmt.Sprintf("VALUE %s %d %d\r\n%s\r\nEND\r\n", q, tc.want, len(body), body))
			c.Do("delete "+q+"\r\n", "DELETED\r\n")
			if n := testbroker.QueueDepth(t, q); n != 0 {
				t.Fatalf("depth %d after delete", n)
			}
		})
	}
}

func TestAMQPViewForeignBinaryBody(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "bin")
	body := avAllBytes()
	avPublish(t, q, amqp091.Table{"x-mc-flags": int64(77)}, body)
	c := g.dial()
	c.Do("get "+q+"\r\n", fmt.Sprintf("VALUE %s 77 %d\r\n%s\r\nEND\r\n", q, len(body), body))
	c.Do("delete "+q+"\r\n", "DELETED\r\n")
	c.synced()
}

func TestAMQPViewExptime(t *testing.T) {
	g := startGateway(t, nil)
	c := g.dial()
	ch := testbroker.Channel(t)

	t.Run("relative seconds become a per-message TTL", func(t *testing.T) {
		q := testbroker.Name(t, "ttl")
		c.Do("set "+q+" 0 100 3\r\nttl\r\n", "STORED\r\n")
		m := avRawGet(t, ch, q)
		if m.Expiration != "100000" {
			t.Fatalf("Expiration = %q, want \"100000\"", m.Expiration)
		}
		if string(m.Body) != "ttl" {
			t.Fatalf("body %q", m.Body)
		}
	})

	t.Run("unix time in the future", func(t *testing.T) {
		q := testbroker.Name(t, "unix")
		exp := time.Now().Add(time.Hour).Unix()
		c.Do(fmt.Sprintf("set %s 0 %d 1\r\nu\r\n", q, exp), "STORED\r\n")
		m := avRawGet(t, ch, q)
		var ms int64
		if _, err := fmt.Sscan(m.Expiration, &ms); err != nil || ms < 3500_000 || ms > 3600_000 {
			t.Fatalf("Expiration = %q, want about 3600000 ms", m.Expiration)
		}
	})

	for _, tc := range []struct{ name, exptime string }{
		{"negative", "-1"},
		{"unix time in the past", "1000000000"},
	} {
		t.Run(tc.name+" is stored and never returned", func(t *testing.T) {
			q := testbroker.Name(t, "dead")
			c.Do("set "+q+" 0 "+tc.exptime+" 4\r\ndead\r\n", "STORED\r\n")
			c.Do("get "+q+"\r\n", "END\r\n")
			other := g.dial()
			other.Do("gets "+q+"\r\n", "END\r\n")
			if n := testbroker.QueueDepth(t, q); n != 0 {
				t.Fatalf("queue holds %d messages, want 0", n)
			}
			if _, ok, err := ch.Get(q, true); err != nil || ok {
				t.Fatalf("raw get: ok=%v err=%v, want empty", ok, err)
			}
		})
	}
}

func TestAMQPViewDisconnectRequeuesRedelivered(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "requeue")
	body := "work item\r\nwith CRLF"
	p := g.dial()
	p.Do(fmt.Sprintf("set %s 11 0 %d\r\n%s\r\n", q, len(body), body), "STORED\r\n")

	w := g.dial()
	w.Do("get "+q+"\r\n", fmt.Sprintf("VALUE %s 11 %d\r\n%s\r\nEND\r\n", q, len(body), body))

	ch := testbroker.Channel(t)
	// Reserved: the broker holds it unacked, a raw consumer cannot have it.
	if _, ok, err := ch.Get(q, true); err != nil || ok {
		t.Fatalf("raw get while reserved: ok=%v err=%v, want empty", ok, err)
	}
	w.Close()

	var m amqp091.Delivery
	testbroker.Eventually(t, 5*time.Second, "the message back in the queue", func() bool {
		var ok bool
		var err error
		m, ok, err = ch.Get(q, false)
		if err != nil {
			t.Fatalf("raw get: %v", err)
		}
		return ok
	})
	if string(m.Body) != body {
		t.Fatalf("requeued body %q, want %q", m.Body, body)
	}
	if !m.Redelivered {
		t.Fatalf("requeued message has Redelivered=false, want true")
	}
	if v, _ := m.Headers["x-mc-flags"].(int64); v != 11 {
		t.Fatalf("requeued flags header %#v", m.Headers["x-mc-flags"])
	}
	if err := m.Ack(false); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

// TestAMQPViewQueueDeletedByOperator: an operator deletes a queue the
// gateway has used (rabbitmqctl delete_queue, the management UI, an
// x-expires policy). The gateway must not keep believing it exists: a get
// of it is a miss (the queue may be auto-declared again), a set stores
// again, and other clients' reservations are not disturbed.
func TestAMQPViewQueueDeletedByOperator(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "gone")
	other := testbroker.Name(t, "other")
	c := g.dial()
	c.Do("set "+q+" 0 0 1\r\na\r\n", "STORED\r\n")
	c.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\na\r\nEND\r\n")
	c.Do("delete "+q+"\r\n", "DELETED\r\n")

	holder := g.dial()
	holder.Do("set "+other+" 0 0 4\r\nheld\r\n", "STORED\r\n")
	holder.Do("get "+other+"\r\n", "VALUE "+other+" 0 4\r\nheld\r\nEND\r\n")

	ch := testbroker.Channel(t)
	if _, err := ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatalf("operator delete: %v", err)
	}

	// Enough gets to go through every fetch channel of the gateway.
	bad := 0
	for i := range 16 {
		c.Send("get " + q + "\r\n")
		if line := c.Line(); line != "END" {
			if bad == 0 {
				t.Errorf("get %d of the deleted queue: %q, want END (a miss)", i+1, line)
			}
			bad++
		}
	}
	if bad > 1 {
		t.Errorf("%d of 16 gets of the deleted queue failed: the gateway never notices it is gone", bad)
	}
	// The other client's reservation is intact: its ack is DELETED, and
	// its message is not handed to anyone else.
	holder.Send("delete " + other + "\r\n")
	if line := holder.Line(); line != "DELETED" {
		t.Errorf("delete of a reservation on another queue after gets of the deleted one: %q, want DELETED", line)
	}
	if n := testbroker.QueueDepth(t, other); n != 0 {
		t.Errorf("the other queue holds %d messages after its message was acked", n)
	}
	c.Send("set " + q + " 0 0 1\r\nb\r\n")
	if line := c.Line(); line != "STORED" {
		t.Fatalf("set to the deleted (auto-declarable) queue: %q, want STORED", line)
	}
	c.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nb\r\nEND\r\n")
	c.Do("delete "+q+"\r\n", "DELETED\r\n")
}
