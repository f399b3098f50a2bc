package bridge

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcbridge/mcbridge/config"
)

// Requeue reasons, a fixed label set.
const (
	reasonDisconnect = "disconnect"
	reasonTimeout    = "timeout"
	reasonAbort      = "abort"
	reasonShutdown   = "shutdown"
)

// requeueReasons are every value of the reason label.
var requeueReasons = []string{reasonDisconnect, reasonTimeout, reasonAbort, reasonShutdown}

// Broker connection roles, the role label's values (amqp.RolePublish and
// amqp.RoleConsume).
const (
	rolePublish = "publish"
	roleConsume = "consume"
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
	buildInfo        *prometheus.GaugeVec

	// up tracks each broker connection, so that mcbridge_amqp_up{role} is 1
	// only while every connection of the role is up.
	upMu     sync.Mutex
	up       map[string]map[int]bool // guarded by upMu; role -> index -> up
	expected map[string]int          // guarded by upMu; role -> connection count
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
			Name: "mcbridge_commands_total",
			Help: "Commands by command and result; a retrieval counts once per key.",
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
			Name: "mcbridge_amqp_up", Help: "1 while every broker connection of the role is up.",
		}, []string{"role"}),
		amqpReconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_amqp_reconnects_total", Help: "Broker reconnections (not first connections), by role.",
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
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcbridge_build_info", Help: "Always 1; the version label is the running mcbridge's.",
		}, []string{"version"}),
		up:       make(map[string]map[int]bool),
		expected: make(map[string]int),
	}
	if reg != nil {
		reg.MustRegister(m.collectors()...)
	}
	// Every role's series exists from the start: down (0) until its
	// connections report up, no reconnection yet.
	for _, role := range []string{rolePublish, roleConsume} {
		m.amqpUp.WithLabelValues(role).Set(0)
		m.amqpReconnects.WithLabelValues(role)
	}
	m.buildInfo.WithLabelValues(Version).Set(1)
	return m
}

// collectors are every series of the gateway, for registration.
func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.connections, m.connectionsTotal, m.commands, m.publishDuration,
		m.reservationsOpen, m.requeued, m.redelivered, m.amqpUp, m.amqpReconnects,
		m.amqpBlocked, m.bytesRead, m.bytesWritten, m.buildInfo}
}

// configure creates the per-queue series of every YAML queue and of the
// shared "_auto" label at zero, so that dashboards and alerts see them
// before the first event, and records how many broker connections each
// role has.
func (m *metrics) configure(cfg *config.Config) {
	labels := []string{autoLabel}
	for i := range cfg.Queues {
		labels = append(labels, cfg.Queues[i].Name)
	}
	for _, q := range labels {
		m.reservationsOpen.WithLabelValues(q)
		m.redelivered.WithLabelValues(q)
		for _, reason := range requeueReasons {
			m.requeued.WithLabelValues(q, reason)
		}
	}
	m.upMu.Lock()
	m.expected[rolePublish] = 1
	m.expected[roleConsume] = max(cfg.AMQP.ConsumeConnections, 1)
	for _, role := range []string{rolePublish, roleConsume} {
		m.setUpLocked(role)
	}
	m.upMu.Unlock()
}

// connectionUp records one broker connection's state and updates its
// role's gauge.
func (m *metrics) connectionUp(role string, index int, up bool) {
	m.upMu.Lock()
	defer m.upMu.Unlock()
	if m.up[role] == nil {
		m.up[role] = make(map[int]bool)
	}
	m.up[role][index] = up
	m.setUpLocked(role)
}

// setUpLocked sets the role's gauge: 1 when at least one connection
// reported, every reported one is up, and none of the expected ones is
// missing.
func (m *metrics) setUpLocked(role string) {
	conns := m.up[role]
	v := 1.0
	if len(conns) == 0 {
		v = 0
	}
	for _, up := range conns {
		if !up {
			v = 0
		}
	}
	for i := range m.expected[role] {
		if !conns[i] {
			v = 0
		}
	}
	m.amqpUp.WithLabelValues(role).Set(v)
}
