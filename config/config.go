// Package config holds mcbridge's YAML schema, its defaults and its validation.
//
// A Config comes from Default (no config file: mcbridge must run with zero
// configuration), Load or LoadFile. Loading is strict: unknown keys, values of
// the wrong type and settings the broker would reject or silently ignore are
// errors that name the line, the key, the value and the rule, so that
// `mcbridge -check-config` catches them before start-up does.
//
// A loaded Config is read-only: its lookup methods are safe for concurrent use
// and are cheap enough to call on every memcache command.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Defaults of every setting. They are constants so that no package can change
// another's idea of the defaults at run time; Default assembles them.
const (
	DefaultListen        = "127.0.0.1:11211"
	DefaultMetricsListen = "127.0.0.1:9150"

	DefaultAMQPURL            = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultConnectionName     = "mcbridge"
	DefaultConsumeConnections = 1
	DefaultConfirmTimeout     = 5 * time.Second
	DefaultHeartbeat          = 10 * time.Second

	DefaultMaxConnections               = 4096
	DefaultMaxItemSize                  = 1 << 20 // memcached's default item size limit
	DefaultIdleTimeout                  = 0 * time.Second
	DefaultReadTimeout                  = 30 * time.Second
	DefaultMaxReservationsPerConnection = 64

	DefaultReservationTimeout = 5 * time.Minute
	DefaultQueueType          = QueueClassic
	DefaultAck                = AckManual
	DefaultOverflow           = OverflowRejectPublish

	DefaultAutoDeclareEnabled = true
	DefaultAutoDeclareKey     = "#"
)

// Bounds that come from RabbitMQ rather than from taste.
const (
	// MaxItemSizeLimit is RabbitMQ 3.x's largest message (max_message_size).
	MaxItemSizeLimit = 128 << 20
	// MaxReservationTimeout is RabbitMQ's default consumer_timeout: a lease
	// this long or longer lets the broker close the whole consume channel
	// (and every reservation on it) before mcbridge requeues the message.
	MaxReservationTimeout = 30 * time.Minute
	// MaxMessageTTL is the largest x-message-ttl RabbitMQ accepts (2^32-1 ms).
	MaxMessageTTL = 4294967295 * time.Millisecond
	// MaxQueueNameLength is memcached's key limit: a queue is addressed by its key.
	MaxQueueNameLength = 250
	// maxShortString is AMQP's shortstr limit (exchange names, routing keys).
	maxShortString = 255
)

// Config is mcbridge's whole configuration. Build it with Default, Load or
// LoadFile. Lookups stay correct when a caller replaces or appends to
// Queues or Exchanges (as tests do), but an entry renamed in place is not
// re-indexed; a Config shared between goroutines must not be modified.
type Config struct {
	Listen        string      // "listen"
	MetricsListen string      // "metrics_listen"; "" disables the HTTP endpoint
	AMQP          AMQP        // "amqp"
	TLS           ServerTLS   // "tls"
	Limits        Limits      // "limits"
	Defaults      Defaults    // "defaults"
	AutoDeclare   AutoDeclare // "auto_declare"
	Exchanges     []Exchange  // "exchanges"
	Queues        []Queue     // "queues"

	idx *index
}

// AMQP configures the broker connections.
type AMQP struct {
	URLs               []URL         // "urls": cluster nodes, tried in order from a random start
	ConnectionName     string        // "connection_name": shown in the management UI
	ConsumeConnections int           // "consume_connections": reservation channels are spread over these
	ConfirmTimeout     time.Duration // "confirm_timeout": how long a set waits for the publisher confirm
	Heartbeat          time.Duration // "heartbeat": 0 takes the broker's (RabbitMQ: 60s); amqp091-go cannot switch them off
	TLS                ClientTLS     // "tls": used for amqps:// URLs
}

// ClientTLS configures TLS towards the broker. LoadFile resolves relative
// paths against the config file's directory, so a config works from any cwd.
type ClientTLS struct {
	CAFile     string // "ca_file"
	CertFile   string // "cert_file"
	KeyFile    string // "key_file"
	ServerName string // "server_name": overrides the host name checked in the broker's certificate
}

// ServerTLS configures TLS on the memcache port. LoadFile resolves relative
// paths against the config file's directory.
type ServerTLS struct {
	CertFile     string // "cert_file"
	KeyFile      string // "key_file"
	ClientCAFile string // "client_ca_file": when set, clients must present a certificate it signed
}

// Enabled reports whether the memcache port speaks TLS. Load guarantees that
// the certificate and the key are set together.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// Limits bound what one client, or all of them, can make the gateway hold.
type Limits struct {
	MaxConnections               int           // "max_connections"
	MaxItemSize                  int64         // "max_item_size", bytes; YAML accepts 1048576, 512KiB, 1MiB, 1GiB
	IdleTimeout                  time.Duration // "idle_timeout": 0 = connections may idle forever
	ReadTimeout                  time.Duration // "read_timeout": deadline for a partly sent command or data block; 0 = none
	MaxReservationsPerConnection int           // "max_reservations_per_connection"
}

// Defaults are the per-queue settings that apply to auto-declared queues and
// to YAML queues that leave them out.
type Defaults struct {
	ReservationTimeout time.Duration // "reservation_timeout"
	QueueType          QueueType     // "queue_type"
	Ack                AckMode       // "ack"
}

// AutoDeclare says which keys may create a durable queue on first use.
type AutoDeclare struct {
	Enabled bool      // "enabled"
	Keys    []Pattern // "keys"
}

// Exchange is an exchange that mcbridge declares and that `set` publishes to
// when the key matches Keys (the key becomes the routing key).
type Exchange struct {
	Name string       // "name"
	Type ExchangeType // "type"
	Keys []Pattern    // "keys"
	Line int          // line of this exchange in the YAML, 0 when it did not come from a file
}

// Binding binds a queue to an exchange declared in the same config.
type Binding struct {
	Exchange string // "exchange"
	// RoutingKey ("routing_key") is filled in by Load when left out: "#" for
	// topic exchanges, the queue's name for direct exchanges, "" for fanout.
	RoutingKey string
}

// Queue is a queue declared at start-up with these arguments. Load fills Type,
// Ack and ReservationTimeout from Defaults when the YAML leaves them out.
type Queue struct {
	Name               string        // "name"
	Type               QueueType     // "type"
	Bindings           []Binding     // "bindings"
	Ack                AckMode       // "ack"
	ReservationTimeout time.Duration // "reservation_timeout"
	MaxLength          int64         // "max_length": 0 = unlimited (argument omitted)
	Overflow           Overflow      // "overflow"
	MessageTTL         time.Duration // "message_ttl": 0 = none (argument omitted); whole milliseconds
	DeadLetterExchange string        // "dead_letter_exchange"
	DeliveryLimit      int           // "delivery_limit": quorum only; 0 = unlimited
	Line               int           // line of this queue in the YAML, 0 when it did not come from a file
}

// QueueType is RabbitMQ's x-queue-type.
type QueueType string

// Queue types mcbridge declares.
const (
	QueueClassic QueueType = "classic"
	QueueQuorum  QueueType = "quorum"
)

// AckMode says when a delivered message is acked.
type AckMode string

// Ack modes.
const (
	// AckManual makes `get` reserve and `delete` ack (the redqueue model).
	AckManual AckMode = "manual"
	// AckAuto makes `get` destructive, like memcacheq and starling.
	AckAuto AckMode = "auto"
)

// ExchangeType is an AMQP exchange type.
type ExchangeType string

// Exchange types mcbridge declares. Headers exchanges are left out: a
// memcache set carries nothing to match headers against.
const (
	ExchangeFanout ExchangeType = "fanout"
	ExchangeDirect ExchangeType = "direct"
	ExchangeTopic  ExchangeType = "topic"
)

// Overflow is RabbitMQ's x-overflow: what a full queue does with a new message.
type Overflow string

// Overflow behaviours.
const (
	// OverflowRejectPublish nacks the publish, so the client gets NOT_STORED
	// and no STORED message is ever dropped.
	OverflowRejectPublish Overflow = "reject-publish"
	// OverflowDropHead drops (or dead-letters) the oldest message.
	OverflowDropHead Overflow = "drop-head"
)

// Error is a problem in a config file, placed so an operator can fix it.
type Error struct {
	File string // set by LoadFile
	Line int    // 0 when the problem has no single place in the file
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// Default returns the configuration mcbridge runs with when it has no config
// file: a local memcache port, a local broker and auto-declared queues.
func Default() *Config {
	c := &Config{
		Listen:        DefaultListen,
		MetricsListen: DefaultMetricsListen,
		AMQP: AMQP{
			URLs:               []URL{DefaultAMQPURL},
			ConnectionName:     DefaultConnectionName,
			ConsumeConnections: DefaultConsumeConnections,
			ConfirmTimeout:     DefaultConfirmTimeout,
			Heartbeat:          DefaultHeartbeat,
		},
		Limits: Limits{
			MaxConnections:               DefaultMaxConnections,
			MaxItemSize:                  DefaultMaxItemSize,
			IdleTimeout:                  DefaultIdleTimeout,
			ReadTimeout:                  DefaultReadTimeout,
			MaxReservationsPerConnection: DefaultMaxReservationsPerConnection,
		},
		Defaults: Defaults{
			ReservationTimeout: DefaultReservationTimeout,
			QueueType:          DefaultQueueType,
			Ack:                DefaultAck,
		},
		AutoDeclare: AutoDeclare{
			Enabled: DefaultAutoDeclareEnabled,
			Keys:    []Pattern{MustParsePattern(DefaultAutoDeclareKey)},
		},
	}
	c.buildIndex()
	return c
}

// Load parses a YAML config. An empty document yields Default(). The error,
// when there is one, is an *Error.
func Load(data []byte) (*Config, error) {
	c := Default()
	d := &decoder{cfg: c}
	if err := d.decode(data); err != nil {
		return nil, err
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	c.buildIndex()
	return c, nil
}

// LoadFile reads and parses a YAML config file. Errors in the content are an
// *Error that prints as "file:line: message". Relative TLS file paths are
// resolved against the file's directory, as Prometheus does, so the config
// means the same thing whatever directory mcbridge starts in.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *fs.PathError already names the file
	}
	c, err := Load(data)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = path
			return nil, ce
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.resolvePaths(filepath.Dir(path))
	return c, nil
}

func (c *Config) resolvePaths(dir string) {
	for _, p := range []*string{
		&c.TLS.CertFile, &c.TLS.KeyFile, &c.TLS.ClientCAFile,
		&c.AMQP.TLS.CAFile, &c.AMQP.TLS.CertFile, &c.AMQP.TLS.KeyFile,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
