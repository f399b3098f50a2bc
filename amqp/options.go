package amqp

import (
	"crypto/tls"
	"log/slog"
	"time"
)

// Role names what a broker connection is for. It is a metric label value.
type Role string

const (
	RolePublish Role = "publish"
	RoleConsume Role = "consume"
)

// Options configure a Client. Zero values get the defaults noted.
type Options struct {
	// URLs are tried in order, starting at a random one so that several
	// gateways spread over a cluster's nodes.
	URLs []string
	// ConnectionName is shown by rabbitmqctl list_connections; the role is
	// appended.
	ConnectionName string
	// ConsumeConnections is how many consuming connections reservations are
	// spread over (default 1).
	ConsumeConnections int
	// PublishChannels is the size of the confirm-channel pool that all
	// clients share (default 2). Many publishes in flight on a few channels
	// beat a channel per client: with cmd/mcbench at 16 clients, 1 or 2
	// channels gave 1.00–1.04× raw publish+confirm, 4 gave 0.89–0.94×.
	PublishChannels int
	// Prefetch is the window of the consumer that serves waits (kestrel
	// /t=) of a classic queue (default 8).
	Prefetch int
	// HotPrefetch is the window of the consumer that serves gets of a busy
	// classic queue (default 128).
	HotPrefetch int
	// ConfirmTimeout bounds the wait for a publisher confirm (default 5s).
	ConfirmTimeout time.Duration
	// GetChannels bounds the basic.get channels of each consume connection,
	// shared by all queues (default 512); Consumers bounds the consumer
	// channels of each (default 512).
	GetChannels, Consumers int
	// RPCTimeout bounds every other wait for the broker: a get, a
	// declaration, a channel opening (default: ConfirmTimeout).
	RPCTimeout time.Duration
	// Heartbeat is the AMQP heartbeat (0: 10s); negative takes the
	// broker's proposal (RabbitMQ: 60s). amqp091-go cannot switch
	// heartbeats off.
	Heartbeat time.Duration
	// TLS is used for amqps:// URLs.
	TLS *tls.Config
	// Topology is declared on every (re)connect.
	Topology Topology
	// StrictStart makes Start fail (and close the client) when the first
	// attempt of any connection fails, instead of retrying in the
	// background: a client opened for a login must not be used before the
	// broker has accepted its credentials on every connection.
	StrictStart bool
	// Observer is told about connection state; nil means nobody listens.
	Observer Observer
	Logger   *slog.Logger

	// Backoff bounds for reconnecting (defaults 100ms and 1s: a broker
	// that is back is used within a second, and dialling a broker that is
	// down costs it a refused connection a second).
	MinBackoff, MaxBackoff time.Duration
}

// Observer receives broker state changes, e.g. to update metrics or to drop
// reservations whose channel is gone. Calls must not block.
type Observer interface {
	ConnectionUp(role Role, index int, up bool)
	Reconnected(role Role)
	Blocked(blocked bool)
	// DeliveriesLost is called when a consume channel closed: every Delivery
	// fetched on it is stale now.
	DeliveriesLost()
}

type nopObserver struct{}

func (nopObserver) ConnectionUp(Role, int, bool) {}
func (nopObserver) Reconnected(Role)             {}
func (nopObserver) Blocked(bool)                 {}
func (nopObserver) DeliveriesLost()              {}

func (o *Options) setDefaults() {
	if len(o.URLs) == 0 {
		o.URLs = []string{"amqp://guest:guest@127.0.0.1:5672/"}
	}
	if o.ConnectionName == "" {
		o.ConnectionName = "mcbridge"
	}
	if o.ConsumeConnections <= 0 {
		o.ConsumeConnections = 1
	}
	if o.PublishChannels <= 0 {
		o.PublishChannels = 2
	}
	if o.Prefetch <= 0 {
		o.Prefetch = defaultPrefetch
	}
	if o.HotPrefetch <= 0 {
		o.HotPrefetch = defaultHotPrefetch
	}
	if o.ConfirmTimeout <= 0 {
		o.ConfirmTimeout = 5 * time.Second
	}
	if o.GetChannels <= 0 {
		o.GetChannels = defaultGetChannels
	}
	if o.Consumers <= 0 {
		o.Consumers = defaultConsumers
	}
	if o.RPCTimeout <= 0 {
		o.RPCTimeout = o.ConfirmTimeout
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 10 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Second
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Topology is what the gateway declares, durable, at start-up and after each
// reconnect.
type Topology struct {
	Exchanges []ExchangeSpec
	Queues    []QueueSpec
}

// ExchangeSpec is a durable exchange.
type ExchangeSpec struct {
	Name string
	Kind string // fanout | direct | topic
	// Origin says where the spec came from (e.g. "config line 12") for errors.
	Origin string
}

// QueueSpec is a durable queue with its arguments and bindings.
type QueueSpec struct {
	Name string
	// Quorum selects x-queue-type quorum; else classic.
	Quorum bool
	// MaxLength 0 = unlimited (argument omitted).
	MaxLength int64
	// Overflow is x-overflow, sent only with MaxLength.
	Overflow string
	// MessageTTL 0 = none (argument omitted).
	MessageTTL         time.Duration
	DeadLetterExchange string
	// DeliveryLimit applies to quorum queues; 0 = unlimited.
	DeliveryLimit int
	Bindings      []BindingSpec
	Origin        string
}

// BindingSpec binds the queue to an exchange.
type BindingSpec struct {
	Exchange   string
	RoutingKey string
}
