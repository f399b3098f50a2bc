package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// reservedPrefix starts the names RabbitMQ keeps for itself: declaring such
// a queue or exchange fails with ACCESS_REFUSED.
const reservedPrefix = "amq."

// finish applies `defaults` to the queues and runs the checks that need the
// whole file. It goes in file order so that the error is always the same.
func (d *decoder) finish() error {
	c := d.cfg
	if err := d.checkListeners(); err != nil {
		return err
	}
	if err := d.checkTLS(); err != nil {
		return err
	}
	for i := range c.Queues {
		q, meta := &c.Queues[i], d.queues[i]
		if q.Type == "" {
			q.Type = c.Defaults.QueueType
		}
		if q.Ack == "" {
			q.Ack = c.Defaults.Ack
		}
		if q.ReservationTimeout == 0 {
			q.ReservationTimeout = c.Defaults.ReservationTimeout
		}
		if q.Overflow == "" {
			q.Overflow = DefaultOverflow
		}
		if q.DeliveryLimit != 0 && q.Type != QueueQuorum {
			// Classic queues do not count deliveries: the limit would
			// silently not apply, and RabbitMQ rejects the argument.
			return &Error{Line: meta.deliveryLimit, Msg: fmt.Sprintf("%s: delivery_limit %d is only valid on quorum queues", meta.where, q.DeliveryLimit)}
		}
		if err := d.checkBindings(q, meta); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) checkListeners() error {
	c := d.cfg
	if c.MetricsListen == "" || c.MetricsListen != c.Listen {
		return nil
	}
	if _, port, _ := net.SplitHostPort(c.Listen); port == "0" {
		return nil // two different ephemeral ports
	}
	return &Error{Line: d.lines["metrics_listen"], Msg: fmt.Sprintf("metrics_listen %q is the same address as listen; the memcache and HTTP servers need a port each", c.MetricsListen)}
}

func (d *decoder) checkTLS() error {
	c := d.cfg
	t := c.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		return &Error{Line: d.lines["tls.cert_file"], Msg: "tls.cert_file is set without tls.key_file; TLS on the memcache port needs both"}
	case t.KeyFile != "" && t.CertFile == "":
		return &Error{Line: d.lines["tls.key_file"], Msg: "tls.key_file is set without tls.cert_file; TLS on the memcache port needs both"}
	case t.ClientCAFile != "" && t.CertFile == "":
		return &Error{Line: d.lines["tls.client_ca_file"], Msg: "tls.client_ca_file is set but TLS is off; it needs tls.cert_file and tls.key_file"}
	}
	a := c.AMQP.TLS
	switch {
	case a.CertFile != "" && a.KeyFile == "":
		return &Error{Line: d.lines["amqp.tls.cert_file"], Msg: "amqp.tls.cert_file is set without amqp.tls.key_file; a client certificate needs both"}
	case a.KeyFile != "" && a.CertFile == "":
		return &Error{Line: d.lines["amqp.tls.key_file"], Msg: "amqp.tls.key_file is set without amqp.tls.cert_file; a client certificate needs both"}
	}
	if a != (ClientTLS{}) {
		for _, u := range c.AMQP.URLs {
			if strings.HasPrefix(strings.ToLower(string(u)), "amqps:") {
				return nil
			}
		}
		line := 0
		for _, k := range []string{"amqp.tls.ca_file", "amqp.tls.cert_file", "amqp.tls.key_file", "amqp.tls.server_name"} {
			if l := d.lines[k]; l != 0 && (line == 0 || l < line) {
				line = l
			}
		}
		return &Error{Line: line, Msg: "amqp.tls is set but no amqp.urls entry uses amqps://, so it would be ignored"}
	}
	return nil
}

func (d *decoder) checkBindings(q *Queue, meta queueMeta) error {
	for i := range q.Bindings {
		b, bm := &q.Bindings[i], meta.bindings[i]
		x, ok := d.cfg.Exchange(b.Exchange)
		if !ok {
			return &Error{Line: bm.exchange, Msg: fmt.Sprintf("%s: exchange %q is not declared in exchanges", bm.where, b.Exchange)}
		}
		name := join(bm.where, "routing_key")
		switch x.Type {
		case ExchangeFanout:
			if b.RoutingKey != "" {
				return &Error{Line: bm.routingKey, Msg: fmt.Sprintf("%s %q has no effect: fanout exchange %q ignores routing keys", name, b.RoutingKey, x.Name)}
			}
		case ExchangeDirect:
			if b.RoutingKey == "" {
				b.RoutingKey = q.Name
			}
			if bm.routingKey != 0 && strings.ContainsAny(b.RoutingKey, "*#") {
				return &Error{Line: bm.routingKey, Msg: fmt.Sprintf("%s %q has a wildcard, but direct exchange %q matches routing keys exactly; use a topic exchange for patterns", name, b.RoutingKey, x.Name)}
			}
		case ExchangeTopic:
			if b.RoutingKey == "" {
				b.RoutingKey = "#"
			}
			if _, rule := parsePattern(b.RoutingKey); rule != "" {
				return &Error{Line: bm.routingKey, Msg: fmt.Sprintf("%s %q is not a valid pattern: %s", name, b.RoutingKey, rule)}
			}
		}
		if len(b.RoutingKey) > maxShortString {
			return &Error{Line: max(bm.routingKey, bm.line), Msg: fmt.Sprintf("%s is %d bytes long; AMQP allows at most %d", name, len(b.RoutingKey), maxShortString)}
		}
		for j := range i {
			if q.Bindings[j] == *b {
				return &Error{Line: bm.line, Msg: fmt.Sprintf("%s repeats %s (exchange %q, routing key %q)", bm.where, meta.bindings[j].label, b.Exchange, b.RoutingKey)}
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
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("has port %q; want a number from 0 to 65535", port)
	}
	return ""
}
