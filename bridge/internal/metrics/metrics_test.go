package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/mcbridge/mcbridge/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
			m := New(nil, "test")
			for _, e := range tt.events {
				m.ConnectionUp(e.role, e.index, e.up)
			}
			if tt.configure {
				m.Configure(cfg)
			}
			for role, want := range tt.want {
				if got := toFloat64(m.AMQPUp.WithLabelValues(role)); got != want {
					t.Errorf("amqp_up{role=%q} = %v, want %v", role, got, want)
				}
			}
		})
	}
	// The count arriving after the events (New runs after the broker's
	// Start) lowers a gauge that missed a connection.
	m := New(nil, "test")
	m.ConnectionUp("consume", 0, true)
	m.Configure(cfg)
	if got := toFloat64(m.AMQPUp.WithLabelValues("consume")); got != 0 {
		t.Errorf("amqp_up{consume} = %v with 1 of 3 connections up, want 0", got)
	}
}

// toFloat64 reads a gauge's value.
func toFloat64(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}
