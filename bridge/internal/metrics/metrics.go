// Package metrics defines the gateway's Prometheus series (SPEC §5): their
// names, help, label sets, and the series that exist from the start. Label
// values come from the config or from fixed sets, never from raw client
// keys.
package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcbridge/mcbridge/bridge/internal/queues"
	"github.com/mcbridge/mcbridge/config"
)

// Login results, the result label's values of mcbridge_auth_total.
const (
	AuthSuccess = "success"
	AuthFailure = "failure"
	AuthRefused = "refused"
)

// Requeue reasons, the reason label's values.
const (
	ReasonDisconnect = "disconnect"
	ReasonTimeout    = "timeout"
	ReasonAbort      = "abort"
	ReasonShutdown   = "shutdown"
)

// requeueReasons are every value of the reason label.
var requeueReasons = []string{ReasonDisconnect, ReasonTimeout, ReasonAbort, ReasonShutdown}

// Limits, the limit label's values of mcbridge_limit_refusals_total (SPEC
// §5): the config keys under limits (and auth) whose bound refused a client.
const (
	LimitMaxConnections = "max_connections"
	LimitMaxQueues      = "max_queues"
	LimitMaxUsers       = "max_users"
	LimitMaxItemSize    = "max_item_size"
)

// limits are every value of the limit label.
var limits = []string{LimitMaxConnections, LimitMaxQueues, LimitMaxUsers, LimitMaxItemSize}

// Broker connection roles, the role label's values (amqp.RolePublish and
// amqp.RoleConsume).
const (
	RolePublish = "publish"
	RoleConsume = "consume"
)

// Metrics are the gateway's Prometheus series.
type Metrics struct {
	Connections      prometheus.Gauge
	ConnectionsTotal prometheus.Counter
	Commands         *prometheus.CounterVec
	PublishDuration  prometheus.Histogram
	ReservationsOpen *prometheus.GaugeVec
	Requeued         *prometheus.CounterVec
	Redelivered      *prometheus.CounterVec
	AMQPUp           *prometheus.GaugeVec
	AMQPReconnects   *prometheus.CounterVec
	AMQPBlocked      prometheus.Gauge
	BytesRead        prometheus.Counter
	BytesWritten     prometheus.Counter
	Auth             *prometheus.CounterVec
	LimitRefusals    *prometheus.CounterVec
	PendingBytes     prometheus.Gauge
	queues           prometheus.GaugeFunc
	buildInfo        *prometheus.GaugeVec

	// queueCount says how many queues have state in the gateway
	// (mcbridge_queues); nil: none yet.
	queueCount atomic.Pointer[func() int]

	// up tracks each broker connection, so that mcbridge_amqp_up{role} is 1
	// only while every connection of the role is up.
	upMu     sync.Mutex
	up       map[string]map[int]bool // guarded by upMu; role -> index -> up
	expected map[string]int          // guarded by upMu; role -> connection count
}

// New makes the series, registered on reg (nil: unregistered);
// mcbridge_build_info carries version.
func New(reg prometheus.Registerer, version string) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcbridge_connections", Help: "Open client connections.",
		}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcbridge_connections_total", Help: "Client connections accepted.",
		}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_commands_total",
			Help: "Commands by command and result; a retrieval counts once per key.",
		}, []string{"command", "result"}),
		PublishDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcbridge_publish_duration_seconds",
			Help:    "Time from a set to the broker's confirm.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		ReservationsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcbridge_reservations_open", Help: "Messages reserved by clients and not yet acked.",
		}, []string{"queue"}),
		Requeued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_requeued_total", Help: "Reservations put back to their queue, by reason.",
		}, []string{"queue", "reason"}),
		Redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_redelivered_total", Help: "Messages handed out that the broker marked redelivered.",
		}, []string{"queue"}),
		AMQPUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcbridge_amqp_up", Help: "1 while every broker connection of the role is up.",
		}, []string{"role"}),
		AMQPReconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_amqp_reconnects_total", Help: "Broker reconnections (not first connections), by role.",
		}, []string{"role"}),
		AMQPBlocked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcbridge_amqp_blocked", Help: "1 while the broker blocks publishing (resource alarm).",
		}),
		BytesRead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcbridge_bytes_read_total", Help: "Bytes read from clients.",
		}),
		BytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcbridge_bytes_written_total", Help: "Bytes written to clients.",
		}),
		Auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_auth_total",
			Help: "Logins by result: success, failure (the broker refused the credentials), refused (the gateway refused: max_users, broker unreachable, too many recent failures).",
		}, []string{"result"}),
		LimitRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcbridge_limit_refusals_total", Help: "Requests or connections refused because a configured limit was reached, by limit.",
		}, []string{"limit"}),
		PendingBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcbridge_pending_bytes", Help: "Bytes of values read from clients whose publish has no verdict yet (limits.max_pending_bytes).",
		}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcbridge_build_info", Help: "Always 1; the version label is the running mcbridge's.",
		}, []string{"version"}),
		up:       make(map[string]map[int]bool),
		expected: make(map[string]int),
	}
	m.queues = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mcbridge_queues", Help: "Queues with state in this gateway (YAML queues and auto-declared ones in use).",
	}, func() float64 {
		if f := m.queueCount.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.Collectors()...)
	}
	// Every role's series exists from the start: down (0) until its
	// connections report up, no reconnection yet.
	for _, role := range []string{RolePublish, RoleConsume} {
		m.AMQPUp.WithLabelValues(role).Set(0)
		m.AMQPReconnects.WithLabelValues(role)
	}
	// Every limit's series exists from the start, at zero, so that an
	// alert on its rate sees it before the first refusal.
	for _, l := range limits {
		m.LimitRefusals.WithLabelValues(l)
	}
	m.buildInfo.WithLabelValues(version).Set(1)
	return m
}

// Collectors are every series of the gateway, for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Connections, m.ConnectionsTotal, m.Commands, m.PublishDuration,
		m.ReservationsOpen, m.Requeued, m.Redelivered, m.AMQPUp, m.AMQPReconnects,
		m.AMQPBlocked, m.BytesRead, m.BytesWritten, m.Auth, m.LimitRefusals, m.PendingBytes, m.queues, m.buildInfo}
}

// CountQueues makes count the source of mcbridge_queues.
func (m *Metrics) CountQueues(count func() int) { m.queueCount.Store(&count) }

// Configure creates the per-queue series of every YAML queue and of the
// shared "_auto" label at zero, so that dashboards and alerts see them
// before the first event, and records how many broker connections each
// role has.
func (m *Metrics) Configure(cfg *config.Config) {
	labels := []string{queues.AutoLabel}
	for i := range cfg.Queues {
		labels = append(labels, cfg.Queues[i].Name)
	}
	for _, q := range labels {
		m.ReservationsOpen.WithLabelValues(q)
		m.Redelivered.WithLabelValues(q)
		for _, reason := range requeueReasons {
			m.Requeued.WithLabelValues(q, reason)
		}
	}
	// The login series exist in every mode (at zero under auth.mode
	// none), so that one dashboard fits every gateway.
	for _, r := range []string{AuthSuccess, AuthFailure, AuthRefused} {
		m.Auth.WithLabelValues(r)
	}
	m.LimitRefusals.WithLabelValues(LimitMaxUsers)
	m.upMu.Lock()
	m.expected[RolePublish] = 1
	m.expected[RoleConsume] = max(cfg.AMQP.ConsumeConnections, 1)
	for _, role := range []string{RolePublish, RoleConsume} {
		m.setUpLocked(role)
	}
	m.upMu.Unlock()
}

// LimitRefused counts one refusal by the named limit (LimitMaxConnections,
// ...).
func (m *Metrics) LimitRefused(limit string) {
	m.LimitRefusals.WithLabelValues(limit).Inc()
}

// ConnectionUp records one broker connection's state and updates its
// role's gauge.
func (m *Metrics) ConnectionUp(role string, index int, up bool) {
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
func (m *Metrics) setUpLocked(role string) {
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
	m.AMQPUp.WithLabelValues(role).Set(v)
}
