package bridge

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Requeue reasons, a fixed label set.
const (
	reasonDisconnect = "disconnect"
	reasonTimeout    = "timeout"
	reasonAbort      = "abort"
	reasonShutdown   = "shutdown"
)

// metrics are the gateway's Prometheus series (SPEC §5). Label values come
// from the config or from fixed sets, never from raw client keys.
type metrics struct {
	connections      prometheus.Gauge
	connectionsTotal prometheus.Counter
	commands         *prometheus.CounterVec
	publishDuration  prometheus.Histogram
	reservationsOpen *prometheus.GaugeVec
	requeued         *prometheus.CounterVec
	redelivered      *prometheus.CounterVec
	amqpUp           *prometheus.GaugeVec
	amqpReconnects   *prometheus.CounterVec
	amqpBlocked      prometheus.Gauge
	bytesRead        prometheus.Counter
	bytesWritten     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcbridge_connections", Help: "Open client connections.",
		}),
		connectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcbridge_connections_total", Help: "Client connections accepted.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_commands_total", Help: "Commands by command and result.",
		}, []string{"command", "result"}),
		publishDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcbridge_publish_duration_seconds",
			Help:    "Time from a set to the broker's confirm.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		reservationsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcbridge_reservations_open", Help: "Messages reserved by clients and not yet acked.",
		}, []string{"queue"}),
		requeued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_requeued_total", Help: "Reservations put back to their queue, by reason.",
		}, []string{"queue", "reason"}),
		redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_redelivered_total", Help: "Messages handed out that the broker marked redelivered.",
		}, []string{"queue"}),
		amqpUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcbridge_amqp_up", Help: "Broker connections up, by role.",
		}, []string{"role"}),
		amqpReconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_amqp_reconnects_total", Help: "Broker reconnections, by role.",
		}, []string{"role"}),
		amqpBlocked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcbridge_amqp_blocked", Help: "1 while the broker blocks publishing (resource alarm).",
		}),
		bytesRead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcbridge_bytes_read_total", Help: "Bytes read from clients.",
		}),
		bytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcbridge_bytes_written_total", Help: "Bytes written to clients.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.connectionsTotal, m.commands, m.publishDuration,
			m.reservationsOpen, m.requeued, m.redelivered, m.amqpUp, m.amqpReconnects,
			m.amqpBlocked, m.bytesRead, m.bytesWritten)
	}
	for _, role := range []string{"publish", "consume"} {
		m.amqpUp.WithLabelValues(role)
		m.amqpReconnects.WithLabelValues(role)
	}
	return m
}
