package amqp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// TopologyError is the broker refusing a declaration: a queue that exists
// with other arguments, a missing permission. Reconnecting does not fix it.
type TopologyError struct {
	Object string // e.g. `queue "billing" (config line 12)`
	Err    error
}

func (e *TopologyError) Error() string {
	return fmt.Sprintf("declare %s: %v", e.Object, e.Err)
}

func (e *TopologyError) Unwrap() error { return e.Err }

func describe(kind, name, origin string) string {
	if origin == "" {
		return fmt.Sprintf("%s %q", kind, name)
	}
	return fmt.Sprintf("%s %q (%s)", kind, name, origin)
}

// declareTopology declares every exchange, queue and binding durable, on one
// channel that it closes again. The first refusal ends it: the broker closes
// the channel on any failed declaration anyway.
func declareTopology(conn *amqp091.Connection, t Topology, brokerMajor int) error {
	if len(t.Exchanges) == 0 && len(t.Queues) == 0 {
		return nil
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open topology channel: %w", err)
	}
	defer ch.Close()
	for _, ex := range t.Exchanges {
		if err := ch.ExchangeDeclare(ex.Name, ex.Kind, true, false, false, false, nil); err != nil {
			return &TopologyError{Object: describe("exchange", ex.Name, ex.Origin), Err: err}
		}
	}
	for _, q := range t.Queues {
		if _, err := ch.QueueDeclare(q.Name, true, false, false, false, q.arguments(brokerMajor)); err != nil {
			return &TopologyError{Object: describe("queue", q.Name, q.Origin), Err: err}
		}
		for _, b := range q.Bindings {
			if err := ch.QueueBind(q.Name, b.RoutingKey, b.Exchange, false, nil); err != nil {
				obj := fmt.Sprintf("binding of %s to exchange %q", describe("queue", q.Name, q.Origin), b.Exchange)
				return &TopologyError{Object: obj, Err: err}
			}
		}
	}
	return nil
}

// arguments are the x- arguments of the queue. Only what is set is sent, so
// that a plain queue stays equivalent to one declared by any other client,
// and the queue type always: a vhost's default queue type (RabbitMQ 3.13+)
// must not turn a classic queue into a quorum one, and the broker treats
// an explicit "classic" as equivalent to none (checked on 3.10).
func (q QueueSpec) arguments(brokerMajor int) amqp091.Table {
	args := amqp091.Table{"x-queue-type": "classic"}
	if q.Quorum {
		args["x-queue-type"] = "quorum"
		switch {
		case q.DeliveryLimit > 0:
			args["x-delivery-limit"] = int64(q.DeliveryLimit)
		case brokerMajor >= 4:
			// RabbitMQ 4 applies a delivery limit of 20 unless told
			// otherwise; -1 means unlimited there. 3.x has no default
			// limit and no use for the argument.
			args["x-delivery-limit"] = int64(-1)
		}
	}
	if q.MaxLength > 0 {
		args["x-max-length"] = q.MaxLength
		if q.Overflow != "" {
			args["x-overflow"] = q.Overflow
		}
	}
	if q.MessageTTL > 0 {
		args["x-message-ttl"] = q.MessageTTL.Milliseconds()
	}
	if q.DeadLetterExchange != "" {
		args["x-dead-letter-exchange"] = q.DeadLetterExchange
	}
	return args
}

// isPreconditionFailed reports a 406: a declaration whose arguments differ
// from the existing queue's.
func isPreconditionFailed(err error) bool {
	var aerr *amqp091.Error
	return errors.As(err, &aerr) && aerr.Code == amqp091.PreconditionFailed
}

// isAccessRefused reports a 403: the user lacks a permission.
func isAccessRefused(err error) bool {
	var aerr *amqp091.Error
	return errors.As(err, &aerr) && aerr.Code == amqp091.AccessRefused
}

// accessRefused wraps a 403 as ErrAccessRefused, keeping the broker's text
// (which names the resource and the user, never a password).
func accessRefused(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrAccessRefused, what, err)
}

// isQueueLimit reports the broker refusing to create a queue for its vhost
// or cluster queue limit: a 406 like a declaration with other arguments,
// told apart by its text ("queue limit in vhost '/' (10) is reached").
func isQueueLimit(err error) bool {
	var aerr *amqp091.Error
	return errors.As(err, &aerr) && aerr.Code == amqp091.PreconditionFailed && strings.Contains(aerr.Reason, "queue limit")
}

// isNotFound reports a 404 from a passive declaration.
func isNotFound(err error) bool {
	var aerr *amqp091.Error
	return errors.As(err, &aerr) && aerr.Code == amqp091.NotFound
}

// majorVersion reads the broker's major version from its server properties.
func majorVersion(conn *amqp091.Connection) int {
	v, _ := conn.Properties["version"].(string)
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return 0
	}
	return n
}
