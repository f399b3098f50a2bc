package bridge

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
)

// drain takes every message of the queues through memcache (get+delete)
// and returns, per queue, the bodies it held.
func drain(c *client, queues ...string) map[string][]string {
	got := map[string][]string{}
	for _, q := range queues {
		for {
			c.Send("get " + q + "\r\n")
			l := c.Line()
			if l == "END" {
				break
			}
			var key string
			var flags, n int
			if _, err := fmt.Sscanf(l, "VALUE %s %d %d", &key, &flags, &n); err != nil {
				c.T.Fatalf("get %s: %q", q, l)
			}
			body := c.Line()
			c.Expect("END\r\n")
			c.Do("delete "+q+"\r\n", "DELETED\r\n")
			got[q] = append(got[q], body)
		}
	}
	return got
}

// TestExchangeRouting: for each exchange type, which queues receive a set
// of each key, seen through memcache and through an AMQP consumer.
func TestExchangeRouting(t *testing.T) {
	fan, dir, top := testbroker.Name(t, "fan"), testbroker.Name(t, "dir"), testbroker.Name(t, "top")
	qa, qb, qc, qd := testbroker.Name(t, "qa"), testbroker.Name(t, "qb"), testbroker.Name(t, "qc"), testbroker.Name(t, "qd")
	yaml := fmt.Sprintf(`auto_declare: {enabled: false}
exchanges:
  - {name: %[1]s, type: fanout, keys: ["orders"]}
  - {name: %[2]s, type: direct, keys: ["pay.*"]}
  - {name: %[3]s, type: topic, keys: ["logs.#"]}
queues:
  - {name: %[4]s, bindings: [{exchange: %[1]s}, {exchange: %[2]s, routing_key: pay.card}]}
  - {name: %[5]s, bindings: [{exchange: %[1]s}, {exchange: %[3]s, routing_key: "logs.*.error"}]}
  - {name: %[6]s, bindings: [{exchange: %[2]s, routing_key: pay.cash}, {exchange: %[3]s, routing_key: "logs.#"}]}
  - {name: %[7]s, bindings: [{exchange: %[3]s, routing_key: "*.web.*"}]}
`, fan, dir, top, qa, qb, qc, qd)
	g := startGateway(t, yamlConfig(t, yaml))
	c := g.dial()

	cases := []struct {
		key   string
		reply string
		want  []string // queues that get a copy
	}{
		{"orders", "STORED", []string{qa, qb}},
		{"pay.card", "STORED", []string{qa}},
		{"pay.cash", "STORED", []string{qc}},
		{"pay.coin", "NOT_STORED", nil}, // direct exchange, no binding: returned
		{"logs.web.error", "STORED", []string{qb, qc, qd}},
		{"logs.db.error", "STORED", []string{qb, qc}},
		{"logs.web.info", "STORED", []string{qc, qd}},
		{"logs", "STORED", []string{qc}},
		{"logs.a.b.error", "STORED", []string{qc}},
		{"nothing.here", "NOT_STORED", nil}, // no exchange, auto_declare off
		{qa, "STORED", []string{qa}},        // a YAML queue by name, default exchange
	}
	queues := []string{qa, qb, qc, qd}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			c.Do(fmt.Sprintf("set %s 9 0 %d\r\n%s\r\n", tc.key, len(tc.key), tc.key), tc.reply+"\r\n")
			got := drain(c, queues...)
			var gotQ []string
			for q, bodies := range got {
				if len(bodies) != 1 || bodies[0] != tc.key {
					t.Errorf("queue %s got %q, want one %q", q, bodies, tc.key)
				}
				gotQ = append(gotQ, q)
			}
			sort.Strings(gotQ)
			want := append([]string(nil), tc.want...)
			sort.Strings(want)
			if strings.Join(gotQ, ",") != strings.Join(want, ",") {
				t.Errorf("set %s reached %v, want %v", tc.key, gotQ, want)
			}
		})
	}

	// The back-office view: an AMQP consumer bound to the fanout exchange
	// sees what memcache clients set.
	ch := testbroker.Channel(t)
	office := testbroker.Name(t, "office")
	if _, err := ch.QueueDeclare(office, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(office, "", fan, false, nil); err != nil {
		t.Fatal(err)
	}
	c.Do("set orders 1 0 5\r\norder\r\n", "STORED\r\n")
	var d amqp091.Delivery
	testbroker.Eventually(t, 5*time.Second, "the back office copy", func() bool {
		var ok bool
		d, ok, _ = ch.Get(office, true)
		return ok
	})
	if string(d.Body) != "order" || d.RoutingKey != "orders" || d.Headers[flagsHeader] != int64(1) || d.DeliveryMode != 2 {
		t.Errorf("back office got body %q key %q headers %v mode %d", d.Body, d.RoutingKey, d.Headers, d.DeliveryMode)
	}
	drain(c, queues...)
}

// TestRejectPublishAndTTL: a full reject-publish queue answers NOT_STORED;
// message_ttl drops old messages, which are never returned.
func TestRejectPublishAndTTL(t *testing.T) {
	full, ttl := testbroker.Name(t, "full"), testbroker.Name(t, "ttl")
	g := startGateway(t, yamlConfig(t, fmt.Sprintf(`queues:
  - {name: %s, max_length: 2, overflow: reject-publish}
  - {name: %s, message_ttl: 100ms}
`, full, ttl)))
	c := g.dial()
	c.Do("set "+full+" 0 0 1\r\n1\r\n", "STORED\r\n")
	c.Do("set "+full+" 0 0 1\r\n2\r\n", "STORED\r\n")
	c.Do("set "+full+" 0 0 1\r\n3\r\n", "NOT_STORED\r\n")
	if got := drain(c, full)[full]; strings.Join(got, ",") != "1,2" {
		t.Errorf("full queue held %v, want [1 2]", got)
	}
	c.Do("set "+full+" 0 0 1\r\n4\r\n", "STORED\r\n")
	drain(c, full)

	c.Do("set "+ttl+" 0 0 3\r\nold\r\n", "STORED\r\n")
	ch := testbroker.Channel(t)
	testbroker.Eventually(t, 5*time.Second, "the TTL to drop the message", func() bool {
		q, err := ch.QueueDeclarePassive(ttl, true, false, false, false, nil)
		return err == nil && q.Messages == 0
	})
	c.Do("get "+ttl+"\r\n", "END\r\n")
	// A per-message exptime also expires it.
	c.Do("set "+full+" 0 1 1\r\nx\r\n", "STORED\r\n")
}

// TestQuorumDeliveryLimit: a poison message on a quorum queue goes to the
// dead-letter exchange after delivery_limit requeues.
func TestQuorumDeliveryLimit(t *testing.T) {
	q, dlx, dead := testbroker.Name(t, "q"), testbroker.Name(t, "dlx"), testbroker.Name(t, "dead")
	g := startGateway(t, yamlConfig(t, fmt.Sprintf(`exchanges:
  - {name: %[2]s, type: fanout, keys: []}
queues:
  - {name: %[1]s, type: quorum, delivery_limit: 2, dead_letter_exchange: %[2]s}
  - {name: %[3]s, bindings: [{exchange: %[2]s}]}
`, q, dlx, dead)))
	c := g.dial()
	c.Do("set "+q+" 0 0 6\r\npoison\r\n", "STORED\r\n")
	aborts := 0
	for range 10 {
		c.Send("get " + q + "\r\n")
		if c.Line() == "END" {
			break
		}
		c.Expect("poison\r\nEND\r\n")
		c.Do("get "+q+"/abort\r\n", "END\r\n")
		aborts++
	}
	if aborts < 2 || aborts > 3 {
		t.Errorf("handed out %d times before dead-lettering, want delivery_limit 2 (+1)", aborts)
	}
	testbroker.Eventually(t, 5*time.Second, "the message in the dead-letter queue", func() bool {
		c.Send("get " + dead + "\r\n")
		return c.Line() != "END"
	})
	c.Expect("poison\r\nEND\r\n")
	c.Do("delete "+dead+"\r\n", "DELETED\r\n")
}

// TestFanoutChild: kestrel's parent+child naming declares a queue bound to
// the fanout exchange parent on first get; it sees what is set after.
func TestFanoutChild(t *testing.T) {
	parent := testbroker.Name(t, "parent")
	child := parent + "+child"
	t.Cleanup(func() { testbroker.Delete(t, child) })
	g := startGateway(t, yamlConfig(t, fmt.Sprintf(`auto_declare: {enabled: false}
exchanges:
  - {name: %[1]s, type: fanout, keys: [%[1]q]}
`, parent)))
	c := g.dial()
	c.Do("set "+parent+" 0 0 6\r\nbefore\r\n", "NOT_STORED\r\n") // nobody bound yet
	c.Do("get "+child+"\r\n", "END\r\n")
	c.Do("set "+parent+" 0 0 5\r\nafter\r\n", "STORED\r\n")
	c.Do("get "+child+"\r\n", "VALUE "+child+" 0 5\r\nafter\r\nEND\r\n")
	c.Do("delete "+child+"\r\n", "DELETED\r\n")
	// Not for other exchange types or unknown parents.
	c.Do("get nosuch+child\r\n", "END\r\n")
}

// TestConflictingQueueStopsStart: a YAML queue that exists with other
// arguments stops start-up with a message naming it, its line and the
// broker's reason.
func TestConflictingQueueStopsStart(t *testing.T) {
	q := testbroker.Name(t, "q")
	ch := testbroker.Channel(t)
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp091.Table{"x-max-length": int64(5)}); err != nil {
		t.Fatal(err)
	}
	cfg := yamlConfig(t, fmt.Sprintf("queues:\n  - name: %s\n    max_length: 10\n", q))
	broker := amqp.New(amqp.Options{URLs: []string{testbroker.URL}, Topology: Topology(cfg), Logger: testserve.Logger(nil)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := broker.Start(ctx)
	broker.Close()
	var terr *amqp.TopologyError
	if !errors.As(err, &terr) {
		t.Fatalf("Start = %v, want a TopologyError", err)
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("queue %q", q), "config line 4", "PRECONDITION_FAILED", "x-max-length"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}
