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
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
	"github.com/mcbridge/mcbridge/mcproto"
)

// The metrics pass the Prometheus linter (names, units, help texts).
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	obs := NewObserver(reg)
	obs.metrics.configure(config.Default())
	obs.metrics.commands.WithLabelValues("get", outHit.String()).Inc()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(fams).Lint()
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != len(obs.metrics.collectors()) {
		t.Errorf("gathered %d families, want %d (one per collector)", len(fams), len(obs.metrics.collectors()))
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

// mcbridge_amqp_up{role} is 1 only while every connection of the role is
// up, whatever order the connections report in, and 0 before any did.
func TestAmqpUpGauge(t *testing.T) {
	cfg := config.Default()
	cfg.AMQP.ConsumeConnections = 3
	type event struct {
		role  string
		index int
		up    bool
	}
	tests := []struct {
		name      string
		configure bool // the server knows the connection counts
		events    []event
		want      map[string]float64
	}{
		{name: "at start", want: map[string]float64{"publish": 0, "consume": 0}},
		{name: "at start, configured", configure: true, want: map[string]float64{"publish": 0, "consume": 0}},
		{name: "publish up", configure: true, events: []event{{"publish", 0, true}},
			want: map[string]float64{"publish": 1, "consume": 0}},
		{name: "one consume of three up", configure: true, events: []event{{"consume", 1, true}},
			want: map[string]float64{"consume": 0}},
		{name: "all consume up", configure: true,
			events: []event{{"consume", 2, true}, {"consume", 0, true}, {"consume", 1, true}},
			want:   map[string]float64{"consume": 1}},
		{name: "one consume drops", configure: true,
			events: []event{{"consume", 0, true}, {"consume", 1, true}, {"consume", 2, true}, {"consume", 1, false}},
			want:   map[string]float64{"consume": 0, "publish": 0}},
		{name: "and comes back", configure: true,
			events: []event{{"consume", 0, true}, {"consume", 1, true}, {"consume", 2, true}, {"consume", 1, false}, {"consume", 1, true}},
			want:   map[string]float64{"consume": 1}},
		{name: "reported before the count is known", configure: false,
			events: []event{{"consume", 0, true}, {"publish", 0, true}},
			want:   map[string]float64{"consume": 1, "publish": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetrics(nil)
			for _, e := range tt.events {
				m.connectionUp(e.role, e.index, e.up)
			}
			if tt.configure {
				m.configure(cfg)
			}
			for role, want := range tt.want {
				if got := toFloat64(m.amqpUp.WithLabelValues(role)); got != want {
					t.Errorf("amqp_up{role=%q} = %v, want %v", role, got, want)
				}
			}
		})
	}
	// The count arriving after the events (New runs after the broker's
	// Start) lowers a gauge that missed a connection.
	m := newMetrics(nil)
	m.connectionUp("consume", 0, true)
	m.configure(cfg)
	if got := toFloat64(m.amqpUp.WithLabelValues("consume")); got != 0 {
		t.Errorf("amqp_up{consume} = %v with 1 of 3 connections up, want 0", got)
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
	for _, role := range []string{rolePublish, roleConsume} {
		if v := toFloat64(obs.metrics.amqpUp.WithLabelValues(role)); v != 0 {
			t.Errorf("amqp_up{role=%q} = %v, want 0", role, v)
		}
		if v := toFloat64(obs.metrics.amqpReconnects.WithLabelValues(role)); v != 0 {
			t.Errorf("amqp_reconnects_total{role=%q} = %v, want 0", role, v)
		}
	}
}

// The first connection is not a reconnection; a publish connection that the
// broker closes comes back and counts once, for its role only.
func TestAmqpReconnectCounted(t *testing.T) {
	g := startGateway(t, nil)
	m := g.srv.metrics
	up := func(role string) float64 { return toFloat64(m.amqpUp.WithLabelValues(role)) }
	reconnects := func(role string) float64 { return toFloat64(m.amqpReconnects.WithLabelValues(role)) }
	for _, role := range []string{rolePublish, roleConsume} {
		if up(role) != 1 || reconnects(role) != 0 {
			t.Fatalf("after start: up{%s}=%v reconnects{%s}=%v, want 1 and 0", role, up(role), role, reconnects(role))
		}
	}
	testbroker.MustCloseConnections(t, "mcbridge-test "+t.Name()+" publish")
	testbroker.Eventually(t, 20*time.Second, "the publish connection to come back", func() bool {
		return reconnects(rolePublish) == 1 && up(rolePublish) == 1
	})
	if reconnects(roleConsume) != 0 || up(roleConsume) != 1 {
		t.Errorf("consume: up=%v reconnects=%v, want 1 and 0", up(roleConsume), reconnects(roleConsume))
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
		return toFloat64(g.srv.metrics.requeued.WithLabelValues(autoLabel, reasonDisconnect)) == 5
	})

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(g.srv.metrics.collectors()...)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	queues := map[string]bool{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "queue":
					queues[lp.GetValue()] = true
				case "command":
					if !knownCommandLabel(lp.GetValue()) {
						t.Errorf("%s: command label %q", f.GetName(), lp.GetValue())
					}
				}
			}
		}
	}
	if len(queues) != 2 || !queues[autoLabel] || !queues[yamlQ] {
		t.Errorf("queue label values %v, want only %q and %q", queues, autoLabel, yamlQ)
	}
	if v := toFloat64(g.srv.metrics.reservationsOpen.WithLabelValues(yamlQ)); v != 0 {
		t.Errorf("reservations_open{%s} = %v after the disconnect, want 0", yamlQ, v)
	}
	if v := toFloat64(g.srv.metrics.requeued.WithLabelValues(yamlQ, reasonDisconnect)); v != 1 {
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
