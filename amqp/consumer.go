package amqp

import (
	"fmt"
	"sync/atomic"
	"time"

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
	// DeliveredAt is when the broker handed it over (when it reached
	// us): the broker's consumer_timeout counts from then.
	DeliveredAt time.Time

	ch      *amqp091.Channel
	tag     uint64
	settled atomic.Bool
	qc      *queueChannel // the channel that delivered it
	f       *fetcher      // of its queue
}

// Ack acknowledges the delivery. ErrStale means its channel is gone and the
// broker has requeued it: nothing was sent.
func (d *Delivery) Ack() error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrSettled
	}
	if d.ch.IsClosed() {
		d.settledNow()
		return ErrStale
	}
	// The connection's writer sends it, with others in one write; a full
	// writer queue sends it here.
	d.qc.acking.Add(1)
	if d.qc.acks != nil && d.qc.acks.enqueue(d) {
		return nil
	}
	d.qc.acking.Add(-1)
	return d.send(settleAck)
}

// Requeue puts the delivery back with basic.reject(requeue), which quorum
// queues count toward their delivery limit. It returns once the broker has
// it back at its place: the next get of the queue through this gateway
// returns it before newer messages.
func (d *Delivery) Requeue() error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrSettled
	}
	if d.ch.IsClosed() {
		d.settledNow()
		return ErrStale
	}
	d.f.requeue([]*Delivery{d}, nil)
	return nil
}

// RequeueNow puts the delivery back with basic.reject(requeue) and returns
// at once: for a gateway that is stopping, where the order of the next get
// no longer matters and a hung broker must not hold the stop up.
func (d *Delivery) RequeueNow() error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrSettled
	}
	return d.sendSettle(settleReject)
}

// Forget settles a delivery whose channel is gone (Stale), sending
// nothing: the broker requeued it when the channel closed. A reservation
// dropped for that reason must be forgotten, or the delivery stays counted
// as held by its queue. It does nothing while the channel lives.
func (d *Delivery) Forget() {
	if d.ch.IsClosed() {
		d.uncount()
	}
}

// uncount settles d, unless it is settled already, with nothing sent: the
// broker requeues it, or did, when its channel closes.
func (d *Delivery) uncount() {
	if d.settled.CompareAndSwap(false, true) {
		d.settledNow()
	}
}

// Stale reports whether the delivering channel is gone.
func (d *Delivery) Stale() bool { return d.ch.IsClosed() }

// sendSettle sends a settlement that the fetcher claimed for it (the
// delivery was never handed out, or its Requeue is under way).
func (d *Delivery) sendSettle(kind settleKind) error {
	d.settled.Store(true)
	if d.ch.IsClosed() {
		d.settledNow()
		return ErrStale
	}
	return d.send(kind)
}

// send writes the settlement on the delivering channel. A closed channel
// object is never reopened (we do not use the library's recovery), so its
// tags can never name another message.
func (d *Delivery) send(kind settleKind) error {
	err := kind.send(d)
	d.qc.ledger.mark(d.tag)
	d.settledNow()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStale, err)
	}
	return nil
}

// settledNow tells the channel that the delivery no longer counts against
// it. Only then may the channel be closed: a settlement must not be
// overtaken by the channel's close.
func (d *Delivery) settledNow() {
	d.f.held.Add(-1)
	d.qc.settled(d.f.c)
}

// ackWritten is settledNow for an ack that went through the writer.
func (d *Delivery) ackWritten() {
	d.qc.acking.Add(-1)
	d.settledNow()
}

// consumeConn is one consuming connection. Channels on it are opened by
// the per-queue fetchers.
type consumeConn struct {
	sup  *supervisor
	pool *chanPool
	cork atomic.Pointer[corkConn]  // the socket of the current connection
	acks atomic.Pointer[ackWriter] // its settlement writer
}
