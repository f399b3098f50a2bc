package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The leaf types below decode one YAML scalar each and know the rule its text
// must follow. They fail with a *ruleError, which names only the rule: the
// walk (walk.go) knows the key and the value and writes the message. Sections
// and lists have no UnmarshalYAML of their own; rules that span several
// settings live in validate.go.

// ruleError is the rule a scalar breaks, phrased to follow the value:
// `"2MB" has unknown unit "MB"`.
type ruleError struct{ rule string }

func (e *ruleError) Error() string { return e.rule }

func ruleErrorf(format string, args ...any) error {
	return &ruleError{fmt.Sprintf(format, args...)}
}

// scalar returns the text of a single value. The walk refuses anything else
// before the YAML library calls a leaf, so this is only a second line.
func scalar(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", ruleErrorf("must be a single value")
	}
	return n.Value, nil
}

// QueueType is RabbitMQ's x-queue-type.
type QueueType string

// Queue types mcbridge declares.
const (
	QueueClassic QueueType = "classic"
	QueueQuorum  QueueType = "quorum"
)

// UnmarshalYAML accepts the queue types mcbridge declares.
func (t *QueueType) UnmarshalYAML(n *yaml.Node) error {
	return decodeEnum(n, t, QueueClassic, QueueQuorum)
}

// AckMode says when a delivered message is acked.
type AckMode string

// Ack modes.
const (
	// AckManual makes `get` reserve and `delete` ack (the redqueue model).
	AckManual AckMode = "manual"
	// AckAuto makes `get` destructive, like memcacheq and starling.
	AckAuto AckMode = "auto"
)

// UnmarshalYAML accepts manual and auto.
func (m *AckMode) UnmarshalYAML(n *yaml.Node) error { return decodeEnum(n, m, AckManual, AckAuto) }

// ExchangeType is an AMQP exchange type.
type ExchangeType string

// Exchange types mcbridge declares. Headers exchanges are left out: a
// memcache set carries nothing to match headers against.
const (
	ExchangeFanout ExchangeType = "fanout"
	ExchangeDirect ExchangeType = "direct"
	ExchangeTopic  ExchangeType = "topic"
)

// UnmarshalYAML accepts the exchange types mcbridge declares.
func (t *ExchangeType) UnmarshalYAML(n *yaml.Node) error {
	return decodeEnum(n, t, ExchangeFanout, ExchangeDirect, ExchangeTopic)
}

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

// UnmarshalYAML accepts reject-publish and drop-head.
func (o *Overflow) UnmarshalYAML(n *yaml.Node) error {
	return decodeEnum(n, o, OverflowRejectPublish, OverflowDropHead)
}

// AuthMode says whether memcache clients log in.
type AuthMode string

// Authentication modes.
const (
	// AuthNone: no login; every client acts as the amqp.urls user.
	AuthNone AuthMode = "none"
	// AuthBroker: clients log in with a broker user's name and password,
	// and the gateway talks to the broker as that user.
	AuthBroker AuthMode = "broker"
)

// UnmarshalYAML accepts none and broker.
func (m *AuthMode) UnmarshalYAML(n *yaml.Node) error { return decodeEnum(n, m, AuthNone, AuthBroker) }

// AnonymousMode says what a client that does not log in may do under
// AuthBroker.
type AnonymousMode string

// Anonymous modes.
const (
	// AnonymousDeny refuses every command of a client that has not logged in.
	AnonymousDeny AnonymousMode = "deny"
	// AnonymousAllow lets such a client act as the amqp.urls user, so that a
	// fleet can move to logins one client at a time.
	AnonymousAllow AnonymousMode = "allow"
)

// UnmarshalYAML accepts deny and allow.
func (m *AnonymousMode) UnmarshalYAML(n *yaml.Node) error {
	return decodeEnum(n, m, AnonymousDeny, AnonymousAllow)
}

func decodeEnum[T ~string](n *yaml.Node, dst *T, values ...T) error {
	s, err := scalar(n)
	if err != nil {
		return err
	}
	names := make([]string, len(values))
	for i, v := range values {
		if s == string(v) {
			*dst = v
			return nil
		}
		names[i] = string(v)
	}
	return ruleErrorf("is not one of %s", strings.Join(names, ", "))
}

// Size is a number of bytes. YAML accepts plain bytes (1048576) or binary
// units (512KiB, 1MiB, 1GiB).
type Size int64

// UnmarshalYAML reads a size; whether it is in range is for validate.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	text, err := scalar(n)
	if err != nil {
		return err
	}
	v, rule := parseSize(text)
	if rule != "" {
		return &ruleError{rule}
	}
	*s = Size(v)
	return nil
}

// String writes the size in the largest binary unit that divides it: 1MiB,
// 1536KiB, 100B.
func (s Size) String() string {
	for _, u := range []struct {
		name  string
		bytes Size
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && s%u.bytes == 0 {
			return strconv.FormatInt(int64(s/u.bytes), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

var sizeUnits = map[string]int64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}

// parseSize reads plain bytes or binary units. Decimal units (KB, MB) are
// refused rather than guessed: memcached's -I and RabbitMQ's
// max_message_size are both powers of two, and 1MB vs 1MiB is a real
// difference at the limit.
func parseSize(s string) (int64, string) {
	s = strings.TrimSpace(s)
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	switch {
	case strings.TrimLeft(num, "+-") == "":
		return 0, "is not a size; use bytes (1048576) or KiB, MiB, GiB (1MiB)"
	case strings.HasPrefix(unit, "."):
		return 0, "is not a whole number; write 1536KiB rather than 1.5MiB"
	}
	factor, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Sprintf("has unknown unit %s; use bytes or KiB, MiB, GiB (1024-based)", quote(unit))
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v > math.MaxInt64/factor || v < math.MinInt64/factor {
		return 0, "is too large"
	}
	return v * factor, ""
}
