// Package config holds mcbridge's YAML schema, its defaults and its validation.
//
// A Config comes from Default (no config file: mcbridge must run with zero
// configuration), Load or LoadFile. Loading is strict: unknown keys, values of
// the wrong type and settings the broker would reject or silently ignore are
// errors that name the line, the key, the value and the rule, so that
// `mcbridge -check-config` catches them before start-up does. No error, and
// no row of Settings, shows a password.
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
	DefaultConsumerTimeout    = 30 * time.Minute // RabbitMQ's default consumer_timeout

	DefaultMaxConnections               = 4096
	DefaultMaxItemSize                  = 1 << 20 // memcached's default item size limit
	DefaultIdleTimeout                  = 0 * time.Second
	DefaultReadTimeout                  = 30 * time.Second
	DefaultMaxReservationsPerConnection = 64
	DefaultMaxQueues                    = 10000
	DefaultMaxPendingBytes              = 256 << 20

	DefaultAuthMode  = AuthNone
	DefaultAnonymous = AnonymousDeny
	DefaultVHost     = "/"
	DefaultIdleClose = 60 * time.Second
	DefaultMaxUsers  = 100

	DefaultReservationTimeout = 5 * time.Minute
	DefaultQueueType          = QueueClassic
	DefaultAck                = AckManual
	DefaultOverflow           = OverflowRejectPublish

	DefaultAutoDeclareEnabled = true
	DefaultAutoDeclareKey     = "#"
)

// Bounds that come from RabbitMQ rather than from taste.
const (
	// MaxItemSizeLimit is RabbitMQ 4.x's default max_message_size. A larger
	// message makes the broker close the publish channel, failing every
	// publish in flight on it, whoever sent them; 3.x allowed 128MiB, but a
	// gateway must not depend on the broker version for that.
	MaxItemSizeLimit = 16 << 20
	// LeaseMargin is how long before the broker's consumer_timeout (which
	// counts from delivery) every lease ends: past the timeout the broker
	// closes the whole consume channel, dropping every reservation on it.
	LeaseMargin = time.Minute
	// MinConsumerTimeout keeps the lease cap (consumer_timeout less
	// LeaseMargin) at a minute or more.
	MinConsumerTimeout = 2 * time.Minute
	// MaxMessageTTL is the largest x-message-ttl RabbitMQ accepts (2^32-1 ms).
	MaxMessageTTL = 4294967295 * time.Millisecond
	// MaxQueueNameLength is memcached's key limit: a queue is addressed by its key.
	MaxQueueNameLength = 250
	// maxShortString is AMQP's shortstr limit (exchange names, routing keys,
	// vhosts).
	maxShortString = 255
)

// Config is mcbridge's whole configuration. Build it with Default, Load or
// LoadFile, which also index the queues and exchanges for the lookup
// methods; a Config is read-only from then on (see lookup.go).
//
// The yaml tags are the only place a key is spelled: decoding, the list of
// known keys in error messages and the hints for mis-indented keys all come
// from them.
type Config struct {
	Listen        string      `yaml:"listen"`
	MetricsListen string      `yaml:"metrics_listen"` // "" disables the HTTP endpoint
	AMQP          AMQP        `yaml:"amqp"`
	TLS           ServerTLS   `yaml:"tls"`
	Limits        Limits      `yaml:"limits"`
	Auth          Auth        `yaml:"auth"`
	Defaults      Defaults    `yaml:"defaults"`
	AutoDeclare   AutoDeclare `yaml:"auto_declare"`
	Exchanges     []Exchange  `yaml:"exchanges"`
	Queues        []Queue     `yaml:"queues"`

	idx index
}

// AMQP configures the broker connections.
type AMQP struct {
	URLs               []URL         `yaml:"urls"`                // cluster nodes, tried in order from a random start
	ConnectionName     string        `yaml:"connection_name"`     // shown in the management UI
	ConsumeConnections int           `yaml:"consume_connections"` // reservation channels are spread over these
	ConfirmTimeout     time.Duration `yaml:"confirm_timeout"`     // how long a set waits for the publisher confirm
	Heartbeat          time.Duration `yaml:"heartbeat"`           // 0 takes the broker's (RabbitMQ: 60s); amqp091-go cannot switch them off
	ConsumerTimeout    time.Duration `yaml:"consumer_timeout"`    // the broker's consumer_timeout: every lease ends a minute before it, counted from delivery
	TLS                ClientTLS     `yaml:"tls"`                 // used for amqps:// URLs
}

// LeaseCap is the longest any reservation may last from its delivery.
func (a *AMQP) LeaseCap() time.Duration { return a.ConsumerTimeout - LeaseMargin }

// ClientTLS configures TLS towards the broker. LoadFile resolves relative
// paths against the config file's directory, so a config works from any cwd.
type ClientTLS struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"` // overrides the host name checked in the broker's certificate
}

// ServerTLS configures TLS on the memcache port. LoadFile resolves relative
// paths against the config file's directory.
type ServerTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"` // when set, clients must present a certificate it signed
}

// Enabled reports whether the memcache port speaks TLS. Load guarantees that
// the certificate and the key are set together.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// Limits bound what one client, or all of them, can make the gateway hold.
type Limits struct {
	MaxConnections               int           `yaml:"max_connections"`
	MaxItemSize                  Size          `yaml:"max_item_size"` // at most MaxItemSizeLimit
	IdleTimeout                  time.Duration `yaml:"idle_timeout"`  // 0 = connections may idle forever
	ReadTimeout                  time.Duration `yaml:"read_timeout"`  // deadline for a partly sent command or data block; 0 = none
	MaxReservationsPerConnection int           `yaml:"max_reservations_per_connection"`
	// MaxQueues bounds the queues with state in this gateway, YAML ones
	// included (they are never refused): past it a set of a new queue is
	// SERVER_ERROR too many queues and a get a miss.
	MaxQueues int `yaml:"max_queues"`
	// MaxPendingBytes bounds the values read from clients but not yet
	// confirmed by the broker; above it the gateway pauses reading. Load
	// guarantees it is at least MaxItemSize, so that one value always fits.
	MaxPendingBytes Size `yaml:"max_pending_bytes"`
}

// Auth says whether memcache clients log in as broker users (the broker
// checks passwords and vhost permissions, as its STOMP and MQTT plugins do).
type Auth struct {
	Mode AuthMode `yaml:"mode"`
	// Anonymous says what clients that do not log in may do under
	// AuthBroker. Under AuthNone nobody logs in and everyone acts as the
	// amqp.urls user, so Load refuses `anonymous: allow` there: it would
	// mean the operator expects logins that never happen. `deny` (the
	// default, and what the documented example spells out) is accepted.
	Anonymous AnonymousMode `yaml:"anonymous"`
	// VHost is the vhost of users who do not name one ("vhost:user").
	VHost string `yaml:"vhost"`
	// IdleClose closes a user's broker connections after this long unused.
	IdleClose time.Duration `yaml:"idle_close"`
	// MaxUsers bounds the identities with open broker connections at once.
	MaxUsers int `yaml:"max_users"`
}

// Defaults are the per-queue settings that apply to auto-declared queues and
// to YAML queues that leave them out.
type Defaults struct {
	ReservationTimeout time.Duration `yaml:"reservation_timeout"`
	QueueType          QueueType     `yaml:"queue_type"`
	Ack                AckMode       `yaml:"ack"`
}

// AutoDeclare says which keys may create a durable queue on first use.
type AutoDeclare struct {
	Enabled bool      `yaml:"enabled"`
	Keys    []Pattern `yaml:"keys"`
}

// Exchange is an exchange that mcbridge declares and that `set` publishes to
// when the key matches Keys (the key becomes the routing key).
type Exchange struct {
	Name string       `yaml:"name"`
	Type ExchangeType `yaml:"type"`
	Keys []Pattern    `yaml:"keys"`
	Line int          `yaml:"-"` // line of this exchange in the YAML, 0 when it did not come from a file
}

// Binding binds a queue to an exchange declared in the same config.
type Binding struct {
	Exchange string `yaml:"exchange"`
	// RoutingKey is filled in by Load when left out: "#" for topic
	// exchanges, the queue's name for direct exchanges, "" for fanout.
	RoutingKey string `yaml:"routing_key"`
}

// Queue is a queue declared at start-up with these arguments. Load fills Type,
// Ack and ReservationTimeout from Defaults when the YAML leaves them out.
type Queue struct {
	Name               string        `yaml:"name"`
	Type               QueueType     `yaml:"type"`
	Bindings           []Binding     `yaml:"bindings"`
	Ack                AckMode       `yaml:"ack"`
	ReservationTimeout time.Duration `yaml:"reservation_timeout"`
	MaxLength          int64         `yaml:"max_length"`  // 0 = unlimited (argument omitted)
	Overflow           Overflow      `yaml:"overflow"`    // what a full queue does with a new message
	MessageTTL         time.Duration `yaml:"message_ttl"` // 0 = none (argument omitted); whole milliseconds
	DeadLetterExchange string        `yaml:"dead_letter_exchange"`
	DeliveryLimit      int           `yaml:"delivery_limit"` // quorum only; 0 = unlimited
	Line               int           `yaml:"-"`              // line of this queue in the YAML, 0 when it did not come from a file
}

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
	c := defaults()
	c.buildIndex()
	return c
}

// defaults is Default without the index: Load decodes the file over it.
func defaults() *Config {
	return &Config{
		Listen:        DefaultListen,
		MetricsListen: DefaultMetricsListen,
		AMQP: AMQP{
			URLs:               []URL{DefaultAMQPURL},
			ConnectionName:     DefaultConnectionName,
			ConsumeConnections: DefaultConsumeConnections,
			ConfirmTimeout:     DefaultConfirmTimeout,
			Heartbeat:          DefaultHeartbeat,
			ConsumerTimeout:    DefaultConsumerTimeout,
		},
		Limits: Limits{
			MaxConnections:               DefaultMaxConnections,
			MaxItemSize:                  DefaultMaxItemSize,
			IdleTimeout:                  DefaultIdleTimeout,
			ReadTimeout:                  DefaultReadTimeout,
			MaxReservationsPerConnection: DefaultMaxReservationsPerConnection,
			MaxQueues:                    DefaultMaxQueues,
			MaxPendingBytes:              DefaultMaxPendingBytes,
		},
		Auth: Auth{
			Mode:      DefaultAuthMode,
			Anonymous: DefaultAnonymous,
			VHost:     DefaultVHost,
			IdleClose: DefaultIdleClose,
			MaxUsers:  DefaultMaxUsers,
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
}

// Load parses a YAML config; keys it leaves out keep their defaults, and an
// empty document yields Default(). The error, when there is one, is an
// *Error.
//
// Loading goes in three steps, and the first problem found is reported:
// the YAML is parsed and every key and value is checked against the schema,
// in file order (walk.go); the document is decoded over Default() with
// unknown fields refused (decode.go); then the rules that span settings run
// (validate.go), naming lines through the layout the first step recorded.
func Load(data []byte) (*Config, error) {
	root, err := parse(data)
	if err != nil {
		return nil, err
	}
	lay, err := walk(root)
	if err != nil {
		return nil, err
	}
	c := defaults()
	if err := decode(data, c); err != nil {
		return nil, err
	}
	c.fill(lay)
	c.buildIndex() // validate looks exchanges up
	if err := c.validate(lay); err != nil {
		return nil, err
	}
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
