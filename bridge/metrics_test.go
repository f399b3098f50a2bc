package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/bridge/internal/queues"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
	"github.com/mcbridge/mcbridge/mcproto"
)

// The metrics pass the Prometheus linter (names, units, help texts).
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	obs := NewObserver(reg)
	obs.metrics.Configure(config.Default())
	obs.metrics.Commands.WithLabelValues("get", outHit.String()).Inc()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(fams).Lint()
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != len(obs.metrics.Collectors()) {
		t.Errorf("gathered %d families, want %d (one per collector)", len(fams), len(obs.metrics.Collectors()))
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

// Before the broker is reachable both roles read 0 and nothing counts as a
// reconnection.
func TestAmqpUpUnreachable(t *testing.T) {
	cfg := testConfig()
	cfg.AMQP.ConsumeConnections = 2
	obs := NewObserver(nil)
	broker := amqp.New(amqp.Options{
		URLs:               []string{"amqp://guest:guest@127.0.0.1:1/"},
		ConsumeConnections: 2,
		Observer:           obs,
		Logger:             testserve.Logger(nil),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer broker.Close()
	New(cfg, broker, obs, Options{Logger: testserve.Logger(nil)})
	for _, role := range []string{metrics.RolePublish, metrics.RoleConsume} {
		if v := toFloat64(obs.metrics.AMQPUp.WithLabelValues(role)); v != 0 {
			t.Errorf("amqp_up{role=%q} = %v, want 0", role, v)
		}
		if v := toFloat64(obs.metrics.AMQPReconnects.WithLabelValues(role)); v != 0 {
			t.Errorf("amqp_reconnects_total{role=%q} = %v, want 0", role, v)
		}
	}
}

// The first connection is not a reconnection; a publish connection that the
// broker closes comes back and counts once, for its role only.
func TestAmqpReconnectCounted(t *testing.T) {
	g := startGateway(t, nil)
	m := g.srv.metrics
	up := func(role string) float64 { return toFloat64(m.AMQPUp.WithLabelValues(role)) }
	reconnects := func(role string) float64 { return toFloat64(m.AMQPReconnects.WithLabelValues(role)) }
	for _, role := range []string{metrics.RolePublish, metrics.RoleConsume} {
		if up(role) != 1 || reconnects(role) != 0 {
			t.Fatalf("after start: up{%s}=%v reconnects{%s}=%v, want 1 and 0", role, up(role), role, reconnects(role))
		}
	}
	testbroker.MustCloseConnections(t, "mcbridge-test "+t.Name()+" publish")
	testbroker.Eventually(t, 20*time.Second, "the publish connection to come back", func() bool {
		return reconnects(metrics.RolePublish) == 1 && up(metrics.RolePublish) == 1
	})
	if reconnects(metrics.RoleConsume) != 0 || up(metrics.RoleConsume) != 1 {
		t.Errorf("consume: up=%v reconnects=%v, want 1 and 0", up(metrics.RoleConsume), reconnects(metrics.RoleConsume))
	}
	// The gateway publishes again.
	q := testbroker.Name(t, "q")
	c := g.dial()
	testbroker.Eventually(t, 10*time.Second, "a set to be stored", func() bool {
		c.Send("set " + q + " 0 0 1\r\nx\r\n")
		return c.Line() == "STORED"
	})
}

// Keys never become label values: many distinct auto-declared keys, keys
// with kestrel options and refused keys leave only the fixed label sets
// and "_auto".
func TestMetricLabelsBounded(t *testing.T) {
	yamlQ := testbroker.Name(t, "yaml")
	g := startGateway(t, yamlConfig(t, fmt.Sprintf("queues: [{name: %q, reservation_timeout: 1m}]\n", yamlQ)))
	c := g.dial()
	for i := range 5 {
		q := testbroker.Name(t, fmt.Sprintf("k%d", i))
		c.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")
		c.Do("get "+q+"/open\r\n", "VALUE "+q+"/open 0 1\r\nx\r\nEND\r\n")
	}
	c.Do("set "+yamlQ+" 0 0 1\r\ny\r\n", "STORED\r\n")
	c.Do("get "+yamlQ+"\r\n", "VALUE "+yamlQ+" 0 1\r\ny\r\nEND\r\n")
	c.Do("get amq.rabbitmq.trace\r\n", "CLIENT_ERROR bad command line format\r\n")
	c.Do("delete a/b\r\n", "CLIENT_ERROR bad command line format\r\n")
	c.Do("GET x\r\n", "ERROR\r\n")
	c.Close()
	testbroker.Eventually(t, 10*time.Second, "the reservations to be requeued", func() bool {
		return toFloat64(g.srv.metrics.Requeued.WithLabelValues(queues.AutoLabel, metrics.ReasonDisconnect)) == 5
	})

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(g.srv.metrics.Collectors()...)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	queueLabels := map[string]bool{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "queue":
					queueLabels[lp.GetValue()] = true
				case "command":
					if !knownCommandLabel(lp.GetValue()) {
						t.Errorf("%s: command label %q", f.GetName(), lp.GetValue())
					}
				}
			}
		}
	}
	if len(queueLabels) != 2 || !queueLabels[queues.AutoLabel] || !queueLabels[yamlQ] {
		t.Errorf("queue label values %v, want only %q and %q", queueLabels, queues.AutoLabel, yamlQ)
	}
	if v := toFloat64(g.srv.metrics.ReservationsOpen.WithLabelValues(yamlQ)); v != 0 {
		t.Errorf("reservations_open{%s} = %v after the disconnect, want 0", yamlQ, v)
	}
	if v := toFloat64(g.srv.metrics.Requeued.WithLabelValues(yamlQ, metrics.ReasonDisconnect)); v != 1 {
		t.Errorf("requeued_total{%s,disconnect} = %v, want 1", yamlQ, v)
	}
}

// knownCommandLabel: the command label is a parser command word or
// "invalid".
func knownCommandLabel(s string) bool {
	if s == "invalid" {
		return true
	}
	for op := range 256 {
		if mcproto.Op(op).String() == s {
			return true
		}
	}
	return false
}

// toFloat64 reads a counter's or gauge's value (client_golang's
// testutil.ToFloat64 without its diff dependency).
func toFloat64(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	panic(fmt.Sprintf("not a counter or gauge: %v", c.Desc()))
}
