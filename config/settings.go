package config

import (
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Setting is one row of `stats settings`: a leaf of the effective config.
type Setting struct {
	Name  string // the YAML path, dot-separated: "limits.max_item_size", "queues.billing.type"
	Value string // one token: see Settings
}

// Settings lists the effective config, one row per leaf, in YAML order
// (exchanges and queues in the order they were declared), so that `stats
// settings` shows what the process really runs with, defaults included.
//
// Values are single tokens so that a STAT line splits cleanly on spaces:
// lists are comma-joined, durations use Go syntax (5m0s), sizes are bytes,
// and a string that is empty or holds a space or quote is printed Go-quoted
// (""). URLs are redacted. A queue's bindings appear as
// queues.<name>.bindings.<i>.exchange and .routing_key.
func (c *Config) Settings() []Setting {
	var s settings
	s.str("listen", c.Listen)
	s.str("metrics_listen", c.MetricsListen)

	urls := make([]string, len(c.AMQP.URLs))
	for i, u := range c.AMQP.URLs {
		urls[i] = u.Redacted()
	}
	s.list("amqp.urls", urls)
	s.str("amqp.connection_name", c.AMQP.ConnectionName)
	s.int("amqp.consume_connections", int64(c.AMQP.ConsumeConnections))
	s.dur("amqp.confirm_timeout", c.AMQP.ConfirmTimeout)
	s.dur("amqp.heartbeat", c.AMQP.Heartbeat)
	s.dur("amqp.consumer_timeout", c.AMQP.ConsumerTimeout)
	s.str("amqp.tls.ca_file", c.AMQP.TLS.CAFile)
	s.str("amqp.tls.cert_file", c.AMQP.TLS.CertFile)
	s.str("amqp.tls.key_file", c.AMQP.TLS.KeyFile)
	s.str("amqp.tls.server_name", c.AMQP.TLS.ServerName)

	s.str("tls.cert_file", c.TLS.CertFile)
	s.str("tls.key_file", c.TLS.KeyFile)
	s.str("tls.client_ca_file", c.TLS.ClientCAFile)

	s.int("limits.max_connections", int64(c.Limits.MaxConnections))
	s.int("limits.max_item_size", int64(c.Limits.MaxItemSize))
	s.dur("limits.idle_timeout", c.Limits.IdleTimeout)
	s.dur("limits.read_timeout", c.Limits.ReadTimeout)
	s.int("limits.max_reservations_per_connection", int64(c.Limits.MaxReservationsPerConnection))
	s.int("limits.max_queues", int64(c.Limits.MaxQueues))
	s.int("limits.max_pending_bytes", int64(c.Limits.MaxPendingBytes))

	s.str("auth.mode", string(c.Auth.Mode))
	s.str("auth.anonymous", string(c.Auth.Anonymous))
	s.str("auth.vhost", c.Auth.VHost)
	s.dur("auth.idle_close", c.Auth.IdleClose)
	s.int("auth.max_users", int64(c.Auth.MaxUsers))

	s.dur("defaults.reservation_timeout", c.Defaults.ReservationTimeout)
	s.str("defaults.queue_type", string(c.Defaults.QueueType))
	s.str("defaults.ack", string(c.Defaults.Ack))

	s.str("auto_declare.enabled", strconv.FormatBool(c.AutoDeclare.Enabled))
	s.list("auto_declare.keys", patternStrings(c.AutoDeclare.Keys))

	for _, x := range c.Exchanges {
		p := "exchanges." + x.Name + "."
		s.str(p+"type", string(x.Type))
		s.list(p+"keys", patternStrings(x.Keys))
	}
	for _, q := range c.Queues {
		p := "queues." + q.Name + "."
		s.str(p+"type", string(q.Type))
		s.str(p+"ack", string(q.Ack))
		s.dur(p+"reservation_timeout", q.ReservationTimeout)
		s.int(p+"max_length", q.MaxLength)
		s.str(p+"overflow", string(q.Overflow))
		s.dur(p+"message_ttl", q.MessageTTL)
		s.str(p+"dead_letter_exchange", q.DeadLetterExchange)
		s.int(p+"delivery_limit", int64(q.DeliveryLimit))
		for i, b := range q.Bindings {
			bp := p + "bindings." + strconv.Itoa(i) + "."
			s.str(bp+"exchange", b.Exchange)
			s.str(bp+"routing_key", b.RoutingKey)
		}
	}
	return s
}

type settings []Setting

func (s *settings) str(name, v string) { *s = append(*s, Setting{name, token(v)}) }

func (s *settings) int(name string, v int64) {
	*s = append(*s, Setting{name, strconv.FormatInt(v, 10)})
}

func (s *settings) dur(name string, v time.Duration) { *s = append(*s, Setting{name, v.String()}) }

func (s *settings) list(name string, vs []string) { s.str(name, strings.Join(vs, ",")) }

// token quotes what would not survive as one space-separated word.
func token(v string) string {
	if v == "" || strings.ContainsFunc(v, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r == '"' || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(v)
	}
	return v
}

func patternStrings(ps []Pattern) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.raw
	}
	return out
}
