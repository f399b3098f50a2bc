package amqp

import (
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// settleKind is how a delivery is settled.
type settleKind uint8

const (
	settleAck      settleKind = iota // basic.ack
	settleReject                     // basic.reject(requeue): a processing failure
	settleGiveBack                   // basic.nack(requeue): prefetched, never claimed
)

func (k settleKind) send(d *Delivery) error {
	switch k {
	case settleAck:
		return d.ch.Ack(d.tag, false)
	case settleReject:
		return d.ch.Reject(d.tag, true)
	default:
		return d.ch.Nack(d.tag, false, true)
	}
}

// ackQueueLen bounds the settlements waiting for the writer; past it a
// settlement is sent by its caller.
const ackQueueLen = 4096

// ackWriter sends the acks, rejects and nacks of one consume connection.
// Settling a delivery only queues it: the client's reply does not wait for
// a socket write, and the writer sends what many clients settled at once in
// one write. basic.ack has no answer from the broker, so an ack is never
// more certain than "sent"; one that a dying connection never sends leaves
// the message to be redelivered, as any ack lost in a fault does.
type ackWriter struct {
	reqs   chan ackRequest
	cork   *corkConn
	done   <-chan *amqp091.Error // the connection closed
	quit   chan struct{}         // send what is queued, then stop
	once   sync.Once
	exited chan struct{}
}

type ackRequest struct {
	d    *Delivery
	kind settleKind
}

func newAckWriter(cork *corkConn, done <-chan *amqp091.Error) *ackWriter {
	return &ackWriter{
		reqs:   make(chan ackRequest, ackQueueLen),
		cork:   cork,
		done:   done,
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
	}
}

// enqueue hands a settlement to the writer; false when its queue is full.
func (w *ackWriter) enqueue(d *Delivery, kind settleKind) bool {
	select {
	case w.reqs <- ackRequest{d, kind}:
		return true
	default:
		return false
	}
}

// run sends settlements until the connection closes, then releases what is
// left without sending (the broker requeues it with the connection).
func (w *ackWriter) run() {
	defer close(w.exited)
	for {
		select {
		case r := <-w.reqs:
			if w.cork != nil {
				w.cork.hold()
			}
			w.send(r)
		drain:
			for range ackQueueLen {
				select {
				case r := <-w.reqs:
					w.send(r)
				default:
					break drain
				}
			}
			if w.cork != nil {
				_ = w.cork.release()
			}
		case <-w.quit:
			w.sendQueued()
			return
		case <-w.done:
			for {
				select {
				case r := <-w.reqs:
					r.d.settled.Store(true)
					if r.d.onSettle != nil {
						r.d.onSettle()
					}
				default:
					return
				}
			}
		}
	}
}

// drain stops the writer once it has sent every queued settlement, and
// waits for it: a graceful close must not drop acks that clients were
// already told about (DELETED).
func (w *ackWriter) drain() {
	w.once.Do(func() { close(w.quit) })
	<-w.exited
}

func (w *ackWriter) sendQueued() {
	for {
		select {
		case r := <-w.reqs:
			w.send(r)
		default:
			return
		}
	}
}

func (w *ackWriter) send(r ackRequest) {
	// A channel that closed meanwhile sends nothing: the library refuses.
	_ = r.kind.send(r.d)
	// Only now may the fetcher close the channel: an ack must not be
	// overtaken by the channel's close.
	if r.d.onSettle != nil {
		r.d.onSettle()
	}
}
