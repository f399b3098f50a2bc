package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// reservedPrefix starts the names RabbitMQ keeps for itself: declaring such
// a queue or exchange fails with ACCESS_REFUSED.
const reservedPrefix = "amq."

// fill completes what the file leaves to other settings, wherever they are
// in the file: a queue's type, ack mode, lease and overflow come from
// `defaults`, a binding's routing key from its exchange's type. It also
// notes the line of each exchange and queue.
func (c *Config) fill(l layout) {
	types := map[string]ExchangeType{}
	for i := range c.Exchanges {
		x := &c.Exchanges[i]
		x.Line = l.line(itemPath("exchanges", i))
		if _, dup := types[x.Name]; !dup {
			types[x.Name] = x.Type
		}
	}
	for i := range c.Queues {
		q := &c.Queues[i]
		q.Line = l.line(itemPath("queues", i))
		if q.Type == "" {
			q.Type = c.Defaults.QueueType
		}
		if q.Ack == "" {
			q.Ack = c.Defaults.Ack
		}
		if !l.has(itemPath("queues", i) + ".reservation_timeout") {
			q.ReservationTimeout = c.Defaults.ReservationTimeout // an explicit 0s is an error
		}
		if q.Overflow == "" {
			q.Overflow = DefaultOverflow
		}
		for j := range q.Bindings {
			b := &q.Bindings[j]
			switch types[b.Exchange] {
			case ExchangeDirect:
				if b.RoutingKey == "" {
					b.RoutingKey = q.Name
				}
			case ExchangeTopic:
				if b.RoutingKey == "" {
					b.RoutingKey = "#"
				}
			}
		}
	}
}

func itemPath(list string, i int) string { return fmt.Sprintf("%s[%d]", list, i) }

// validate runs the rules that a single value cannot break on its own:
// ranges, settings that need each other, names that must be unique. It goes
// in a fixed order so that a file always reports the same problem.
func (c *Config) validate(l layout) error {
	for _, check := range []func(layout) error{
		c.checkListeners, c.AMQP.check, c.checkTLS, c.Limits.check, c.Auth.check,
		c.checkDefaults, c.checkExchanges, c.checkQueues,
	} {
		if err := check(l); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) checkListeners(l layout) error {
	if rule := checkAddress(c.Listen); rule != "" {
		return l.invalid("listen", c.Listen, "%s", rule)
	}
	if c.MetricsListen == "" {
		return nil
	}
	if rule := checkAddress(c.MetricsListen); rule != "" {
		return l.invalid("metrics_listen", c.MetricsListen, "%s", rule)
	}
	if _, port, _ := net.SplitHostPort(c.Listen); c.MetricsListen != c.Listen || port == "0" {
		return nil // different addresses, or two different ephemeral ports
	}
	return l.errorf("metrics_listen", "metrics_listen %s is the same address as listen; the memcache and HTTP servers need a port each", quote(c.MetricsListen))
}

func (a *AMQP) check(l layout) error {
	if len(a.URLs) == 0 {
		return l.errorf("amqp.urls", "amqp.urls must list at least one broker URL (remove the key for the default %s)", URL(DefaultAMQPURL))
	}
	first := map[URL]int{}
	for i, u := range a.URLs {
		if j, dup := first[u]; dup {
			return l.invalid(itemPath("amqp.urls", i), u, "is listed twice (first at line %d)", l.line(itemPath("amqp.urls", j)))
		}
		first[u] = i
	}
	switch {
	case a.ConsumeConnections < 1:
		return l.broken("amqp.consume_connections", a.ConsumeConnections, "must be at least 1")
	case a.ConfirmTimeout <= 0:
		return l.broken("amqp.confirm_timeout", a.ConfirmTimeout, "must be greater than 0")
	case a.ConsumerTimeout < MinConsumerTimeout:
		return l.broken("amqp.consumer_timeout", a.ConsumerTimeout, "must be at least %v: leases end %v before it", MinConsumerTimeout, LeaseMargin)
	case a.Heartbeat < 0:
		return l.broken("amqp.heartbeat", a.Heartbeat, "must not be negative (0 takes the broker's)")
	case a.Heartbeat%time.Second != 0:
		return l.broken("amqp.heartbeat", a.Heartbeat, "must be whole seconds: AMQP negotiates heartbeats in seconds")
	case a.Heartbeat > math.MaxUint16*time.Second:
		return l.broken("amqp.heartbeat", a.Heartbeat, "is above AMQP's maximum of %v", math.MaxUint16*time.Second)
	}
	return nil
}

func (c *Config) checkTLS(l layout) error {
	t := c.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		return l.errorf("tls.cert_file", "tls.cert_file is set without tls.key_file; TLS on the memcache port needs both")
	case t.KeyFile != "" && t.CertFile == "":
		return l.errorf("tls.key_file", "tls.key_file is set without tls.cert_file; TLS on the memcache port needs both")
	case t.ClientCAFile != "" && t.CertFile == "":
		return l.errorf("tls.client_ca_file", "tls.client_ca_file is set but TLS is off; it needs tls.cert_file and tls.key_file")
	}
	a := c.AMQP.TLS
	switch {
	case a.CertFile != "" && a.KeyFile == "":
		return l.errorf("amqp.tls.cert_file", "amqp.tls.cert_file is set without amqp.tls.key_file; a client certificate needs both")
	case a.KeyFile != "" && a.CertFile == "":
		return l.errorf("amqp.tls.key_file", "amqp.tls.key_file is set without amqp.tls.cert_file; a client certificate needs both")
	case a == ClientTLS{}:
		return nil
	}
	for _, u := range c.AMQP.URLs {
		if strings.HasPrefix(strings.ToLower(string(u)), "amqps:") {
			return nil
		}
	}
	line := 0
	for _, k := range []string{"amqp.tls.ca_file", "amqp.tls.cert_file", "amqp.tls.key_file", "amqp.tls.server_name"} {
		if l.has(k) && (line == 0 || l.line(k) < line) {
			line = l.line(k)
		}
	}
	return &Error{Line: line, Msg: "amqp.tls is set but no amqp.urls entry uses amqps://, so it would be ignored"}
}

func (m *Limits) check(l layout) error {
	const timeoutRule = "must not be negative (0 means no timeout)"
	switch {
	case m.MaxConnections < 1:
		return l.broken("limits.max_connections", m.MaxConnections, "must be at least 1")
	case m.MaxItemSize <= 0:
		return l.broken("limits.max_item_size", m.MaxItemSize, "must be greater than 0")
	case m.MaxItemSize > MaxItemSizeLimit:
		return l.broken("limits.max_item_size", m.MaxItemSize, "is above %v, the largest message RabbitMQ 4.x accepts by default (max_message_size); a larger one would make the broker close the publish channel that all clients share", Size(MaxItemSizeLimit))
	case m.IdleTimeout < 0:
		return l.broken("limits.idle_timeout", m.IdleTimeout, timeoutRule)
	case m.ReadTimeout < 0:
		return l.broken("limits.read_timeout", m.ReadTimeout, timeoutRule)
	case m.MaxReservationsPerConnection < 1:
		return l.broken("limits.max_reservations_per_connection", m.MaxReservationsPerConnection, "must be at least 1")
	case m.MaxQueues < 1:
		return l.broken("limits.max_queues", m.MaxQueues, "must be at least 1 (auto_declare: {enabled: false} stops auto-declaring)")
	case m.MaxPendingBytes < m.MaxItemSize:
		return l.broken("limits.max_pending_bytes", m.MaxPendingBytes, "is below limits.max_item_size (%s): a value of the largest size must fit", l.text("limits.max_item_size", m.MaxItemSize))
	}
	return nil
}

func (a *Auth) check(l layout) error {
	switch {
	case a.Mode == AuthNone && a.Anonymous == AnonymousAllow:
		// See Auth.Anonymous: with no logins, allowing anonymous clients
		// says nothing, and suggests the operator expects auth.mode broker.
		return l.broken("auth.anonymous", a.Anonymous, "has no effect with auth.mode none, where every client acts as the amqp.urls user; set auth.mode: broker to make clients log in")
	case a.IdleClose <= 0:
		return l.broken("auth.idle_close", a.IdleClose, "must be greater than 0")
	case a.MaxUsers < 1:
		return l.broken("auth.max_users", a.MaxUsers, "must be at least 1")
	}
	if rule := checkVHost(a.VHost); rule != "" {
		return l.invalid("auth.vhost", a.VHost, "%s", rule)
	}
	return nil
}

// checkVHost: a vhost name is an AMQP short string, and RabbitMQ wants it
// to be UTF-8.
func checkVHost(s string) string {
	switch {
	case s == "":
		return `must not be empty; RabbitMQ's default vhost is "/"`
	case len(s) > maxShortString:
		return fmt.Sprintf("is %d bytes long; AMQP allows at most %d", len(s), maxShortString)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.ContainsFunc(s, unicode.IsControl):
		return "contains a control character"
	}
	return ""
}

func (c *Config) checkDefaults(l layout) error {
	return checkLease(l, "defaults.reservation_timeout", c.Defaults.ReservationTimeout, &c.AMQP)
}

func checkLease(l layout, path string, v time.Duration, a *AMQP) error {
	switch {
	case v <= 0:
		return l.broken(path, v, "must be greater than 0")
	case v > a.LeaseCap():
		return l.broken(path, v, "must be at most %v: leases end %v before amqp.consumer_timeout (%v), or the broker closes the consume channel", a.LeaseCap(), LeaseMargin, a.ConsumerTimeout)
	}
	return nil
}

// checkItemName checks the name of item i of a list (exchanges, queues): it
// is there, it passes rule, and no earlier item has it.
func checkItemName(l layout, list string, i int, names []string, rule func(string) string) error {
	path := itemPath(list, i)
	name := names[i]
	switch {
	case !l.has(path + ".name"):
		return l.errorf(path, "%s: name is required", path)
	case rule(name) != "":
		return l.errorf(path+".name", "%s: name %s %s", path, quote(name), rule(name))
	}
	for j := range i {
		if names[j] == name {
			other := itemPath(list, j)
			return l.errorf(path+".name", "%s: name %s is already used by %s (line %d)", path, quote(name), other, l.line(other))
		}
	}
	return nil
}

func (c *Config) checkExchanges(l layout) error {
	names := make([]string, len(c.Exchanges))
	for i, x := range c.Exchanges {
		names[i] = x.Name
	}
	for i := range c.Exchanges {
		if err := checkItemName(l, "exchanges", i, names, checkExchangeName); err != nil {
			return err
		}
		path := itemPath("exchanges", i)
		if c.Exchanges[i].Type == "" {
			return l.errorf(path, "%s: type is required (fanout, direct or topic)", l.label(path))
		}
		if err := c.checkShadowed(l, i); err != nil {
			return err
		}
	}
	return nil
}

// checkShadowed rejects keys of exchange i that an earlier exchange already
// takes (first match wins), since nothing would ever publish through them.
// Only cases that are certain are caught: the same pattern, an earlier "#",
// or a literal key that an earlier pattern matches.
func (c *Config) checkShadowed(l layout, i int) error {
	x := &c.Exchanges[i]
	where := l.label(itemPath("exchanges", i))
	for k, p := range x.Keys {
		at := fmt.Sprintf("exchanges[%d].keys[%d]", i, k)
		for j, prev := range c.Exchanges[:i] {
			for _, q := range prev.Keys {
				if q.raw == p.raw || q.raw == "#" || (!p.wild && q.Match(p.raw)) {
					return l.errorf(at, "%s: key %s is already routed to %s by its key %s (the first exchange that matches wins), so nothing would publish here",
						where, quote(p.raw), itemLabel("exchanges", j, prev.Name), quote(q.raw))
				}
			}
		}
		for j := range k {
			if x.Keys[j].raw == p.raw {
				return l.errorf(at, "%s: key %s is listed twice", where, quote(p.raw))
			}
		}
	}
	return nil
}

func (c *Config) checkQueues(l layout) error {
	names := make([]string, len(c.Queues))
	for i, q := range c.Queues {
		names[i] = q.Name
	}
	for i := range c.Queues {
		if err := checkItemName(l, "queues", i, names, checkQueueName); err != nil {
			return err
		}
		if err := c.checkQueue(l, i); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) checkQueue(l layout, i int) error {
	q := &c.Queues[i]
	at := func(key string) string { return itemPath("queues", i) + "." + key }
	switch {
	case q.MaxLength < 0:
		return l.broken(at("max_length"), q.MaxLength, "must not be negative")
	case q.MessageTTL < 0:
		return l.broken(at("message_ttl"), q.MessageTTL, "must not be negative (0 means no TTL)")
	case q.MessageTTL%time.Millisecond != 0:
		return l.broken(at("message_ttl"), q.MessageTTL, "must be whole milliseconds: RabbitMQ's x-message-ttl counts milliseconds")
	case q.MessageTTL > MaxMessageTTL:
		return l.broken(at("message_ttl"), q.MessageTTL, "is above RabbitMQ's maximum of %v", MaxMessageTTL)
	case q.DeliveryLimit < 0:
		return l.broken(at("delivery_limit"), q.DeliveryLimit, "must not be negative")
	case q.DeliveryLimit != 0 && q.Type != QueueQuorum:
		// Classic queues do not count deliveries: the limit would silently
		// not apply, and RabbitMQ rejects the argument.
		return l.broken(at("delivery_limit"), q.DeliveryLimit, "is only valid on quorum queues")
	}
	if err := checkLease(l, at("reservation_timeout"), q.ReservationTimeout, &c.AMQP); err != nil {
		return err
	}
	// amq.* exchanges are fine here: they exist and may be targets.
	if dlx := q.DeadLetterExchange; dlx != "" {
		if rule := checkName(dlx, maxShortString); rule != "" {
			return l.invalid(at("dead_letter_exchange"), dlx, "%s", rule)
		}
	}
	return c.checkBindings(l, i)
}

func (c *Config) checkBindings(l layout, qi int) error {
	q := &c.Queues[qi]
	for i := range q.Bindings {
		b := &q.Bindings[i]
		path := fmt.Sprintf("queues[%d].bindings[%d]", qi, i)
		where := l.label(path)
		if !l.has(path + ".exchange") {
			return l.errorf(path, "%s: exchange is required, e.g. {exchange: orders}", where)
		}
		x, ok := c.Exchange(b.Exchange)
		if !ok {
			return l.errorf(path+".exchange", "%s: exchange %s is not declared in exchanges", where, quote(b.Exchange))
		}
		rk := path + ".routing_key"
		switch x.Type {
		case ExchangeFanout:
			if b.RoutingKey != "" {
				return l.invalid(rk, b.RoutingKey, "has no effect: fanout exchange %s ignores routing keys", quote(x.Name))
			}
		case ExchangeDirect:
			if l.has(rk) && strings.ContainsAny(b.RoutingKey, "*#") {
				return l.invalid(rk, b.RoutingKey, "has a wildcard, but direct exchange %s matches routing keys exactly; use a topic exchange for patterns", quote(x.Name))
			}
		case ExchangeTopic:
			if _, rule := parsePattern(b.RoutingKey); rule != "" {
				return l.invalid(rk, b.RoutingKey, "is not a valid pattern: %s", rule)
			}
		}
		if len(b.RoutingKey) > maxShortString {
			return l.errorf(rk, "%s is %d bytes long; AMQP allows at most %d", l.label(rk), len(b.RoutingKey), maxShortString)
		}
		for j := range i {
			if q.Bindings[j] == *b {
				return l.errorf(path, "%s repeats bindings[%d] (exchange %s, routing key %s)", where, j, quote(b.Exchange), quote(b.RoutingKey))
			}
		}
	}
	return nil
}

// checkQueueName: a queue is addressed by a memcache key, so its name must be
// a valid key without kestrel options, and one RabbitMQ lets us declare.
func checkQueueName(s string) string {
	if strings.ContainsRune(s, '/') {
		return `contains "/", which starts kestrel options in a key, so no client could address the queue`
	}
	if strings.HasPrefix(s, reservedPrefix) {
		return `must not start with "amq." (RabbitMQ reserves it)`
	}
	return checkName(s, MaxQueueNameLength)
}

func checkExchangeName(s string) string {
	if strings.HasPrefix(s, reservedPrefix) {
		return `must not start with "amq." (RabbitMQ reserves it)`
	}
	return checkName(s, maxShortString)
}

func checkName(s string, maxLen int) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > maxLen:
		return fmt.Sprintf("is %d bytes long; the limit is %d", len(s), maxLen)
	}
	return checkChars(s)
}

// checkChars refuses what the memcache text protocol cannot carry in a key
// (whitespace, control characters) and what RabbitMQ refuses (invalid UTF-8).
func checkChars(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Sprintf("contains %q; whitespace and control characters are not allowed", r)
		}
	}
	return ""
}

func checkAddress(s string) string {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "is not a host:port address, e.g. 127.0.0.1:11211 or :11211"
	}
	// The port is repeated only when it is a number: "u:secret@h" splits
	// into host "u" and port "secret@h".
	n, err := strconv.ParseUint(port, 10, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return "is not a host:port address, e.g. 127.0.0.1:11211 or :11211"
	case err != nil || n > 65535:
		return fmt.Sprintf("has port %q; want a number from 0 to 65535", port)
	}
	return ""
}
