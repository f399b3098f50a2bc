package amqp

import (
	"fmt"
	"sync/atomic"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Delivery is one message fetched for a reservation: delivered, not acked.
// It is settled at most once, with Ack or Requeue, and only on the channel
// that delivered it.
type Delivery struct {
	Queue       string
	Body        []byte
	Headers     Table
	Redelivered bool
	MessageID   string

	ch      *amqp091.Channel
	tag     uint64
	settled atomic.Bool
	// onSettle, when set, runs once after the delivery's settlement was
	// sent (or found stale), so its fetcher knows when its channel is free.
	onSettle func()
	// acks, when set, sends the settlement for the caller.
	acks *ackWriter
	// ledger, when set, is told of the settlement once it is written.
	ledger *tagLedger
}

func newDelivery(queue string, ch *amqp091.Channel, m *amqp091.Delivery) *Delivery {
	return &Delivery{
		Queue:       queue,
		Body:        m.Body,
		Headers:     m.Headers,
		Redelivered: m.Redelivered,
		MessageID:   m.MessageId,
		ch:          ch,
		tag:         m.DeliveryTag,
	}
}

// Ack acknowledges the delivery. ErrStale means its channel is gone and the
// broker has requeued it: nothing was sent.
func (d *Delivery) Ack() error { return d.settle(settleAck) }

// Requeue puts the delivery back with basic.reject(requeue), which quorum
// queues count toward their delivery limit.
func (d *Delivery) Requeue() error { return d.settle(settleReject) }

// Stale reports whether the delivering channel is gone.
func (d *Delivery) Stale() bool { return d.ch.IsClosed() }

// giveBack returns a prefetched delivery nobody claimed, with basic.nack:
// it is not a processing failure, so RabbitMQ 4.3+ quorum queues do not
// count it toward the delivery limit.
func (d *Delivery) giveBack() error { return d.settle(settleGiveBack) }

func (d *Delivery) settle(kind settleKind) error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrSettled
	}
	// A closed channel object is never reopened (we do not use the
	// library's recovery), so its tags can never name another message.
	if d.ch.IsClosed() {
		if d.onSettle != nil {
			d.onSettle()
		}
		return ErrStale
	}
	// Acks and give-backs go through the connection's writer; a reject is
	// sent at once, so that the message is back in the queue when Requeue
	// returns (a get that follows sees it).
	if kind != settleReject && d.acks != nil && d.acks.enqueue(d, kind) {
		return nil
	}
	err := kind.send(d)
	if d.ledger != nil {
		d.ledger.mark(d.tag)
	}
	if d.onSettle != nil {
		d.onSettle()
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStale, err)
	}
	return nil
}

// consumeConn is one consuming connection. Channels on it are opened by
// the per-queue fetchers.
type consumeConn struct {
	sup  *supervisor
	cork atomic.Pointer[corkConn]  // the socket of the current connection
	acks atomic.Pointer[ackWriter] // its settlement writer
}
