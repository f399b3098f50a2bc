package bridge

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
)

// Observer receives broker events for a Server. It exists before the
// server because the broker client needs it at construction.
type Observer struct {
	metrics *metrics.Metrics
	srv     atomic.Pointer[Server]
}

// NewObserver registers the gateway's metrics on reg (nil: unregistered).
func NewObserver(reg prometheus.Registerer) *Observer {
	return &Observer{metrics: metrics.New(reg, Version)}
}

var _ amqp.Observer = (*Observer)(nil)

// ConnectionUp implements amqp.Observer. A role's gauge is 1 only when all
// of its connections are up.
func (o *Observer) ConnectionUp(role amqp.Role, index int, up bool) {
	o.metrics.ConnectionUp(string(role), index, up)
}

// Reconnected implements amqp.Observer.
func (o *Observer) Reconnected(role amqp.Role) {
	o.metrics.AMQPReconnects.WithLabelValues(string(role)).Inc()
}

// Blocked implements amqp.Observer.
func (o *Observer) Blocked(blocked bool) {
	v := 0.0
	if blocked {
		v = 1
	}
	o.metrics.AMQPBlocked.Set(v)
}

// DeliveriesLost implements amqp.Observer: reservations on a dead channel
// were requeued by the broker; drop them so nobody acks them.
func (o *Observer) DeliveriesLost() {
	if s := o.srv.Load(); s != nil {
		for _, r := range s.registry.stale() {
			if r.end() {
				s.settle(r, settleDrop, "")
			}
		}
	}
}

// LimitRefused counts a client request or connection refused by the named
// limit (metrics.LimitMaxConnections, ...) in
// mcbridge_limit_refusals_total.
func (o *Observer) LimitRefused(limit string) {
	o.metrics.LimitRefused(limit)
}
