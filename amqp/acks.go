package amqp

import (
	"cmp"
	"slices"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// settleKind is how a delivery is settled.
type settleKind uint8

const (
	settleAck           settleKind = iota // basic.ack
	settleReject                          // basic.reject(requeue): a processing failure
	settleNackUnclaimed                   // basic.nack(requeue): prefetched, never claimed
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

// ackHold is how long the writer may keep an ack that does not yet join a
// run of consecutive tags, expecting the deliveries below it to be acked
// too, so that one multiple ack covers them all. Clients were answered
// already; what the hold delays is the broker's bookkeeping (and the
// consumer's window, which is sized for it).
const ackHold = time.Millisecond

// ackWriter sends the acks of one consume connection (give-backs are sent
// by their fetcher, which orders them with its gets). Acking only queues: the client's reply does not wait for
// a socket write, and the writer sends what many clients settled at once in
// one write, acks of consecutive tags as one multiple ack. basic.ack has no
// answer from the broker, so an ack is never more certain than "sent"; one
// that a dying connection never sends leaves the message to be
// redelivered, as any ack lost in a fault does.
type ackWriter struct {
	reqs   chan ackRequest
	cork   *corkConn
	done   <-chan *amqp091.Error // the connection closed
	quit   chan struct{}         // send what is queued, then stop
	once   sync.Once
	exited chan struct{}

	// Owned by run: acks held for a run, per channel.
	held map[*tagLedger]*heldAcks
}

type ackRequest struct {
	d *Delivery
}

// heldAcks are the acks of one channel that the writer has not sent yet.
type heldAcks struct {
	ds     []*Delivery // by arrival
	oldest time.Time
}

func newAckWriter(cork *corkConn, done <-chan *amqp091.Error) *ackWriter {
	return &ackWriter{
		reqs:   make(chan ackRequest, ackQueueLen),
		cork:   cork,
		done:   done,
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
		held:   make(map[*tagLedger]*heldAcks),
	}
}

// enqueue hands an ack to the writer; false when its queue is full.
func (w *ackWriter) enqueue(d *Delivery) bool {
	select {
	case w.reqs <- ackRequest{d}:
		return true
	default:
		return false
	}
}

// run sends settlements until the connection closes, then releases what is
// left without sending (the broker requeues it with the connection).
func (w *ackWriter) run() {
	defer close(w.exited)
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	for {
		select {
		case r := <-w.reqs:
			w.take(r)
			w.takeQueued()
		case <-hold.C:
		case <-w.quit:
			w.takeQueued()
			w.flush(true)
			return
		case <-w.done:
			w.release()
			return
		}
		if next := w.flush(false); !next.IsZero() {
			hold.Reset(time.Until(next))
		}
	}
}

func (w *ackWriter) takeQueued() {
	for {
		select {
		case r := <-w.reqs:
			w.take(r)
		default:
			return
		}
	}
}

// take holds an ack for flush.
func (w *ackWriter) take(r ackRequest) {
	ledger := r.d.qc.ledger
	h := w.held[ledger]
	if h == nil {
		h = &heldAcks{oldest: time.Now()}
		w.held[ledger] = h
	}
	h.ds = append(h.ds, r.d)
}

// flush sends, for each channel, the run of held acks its ledger allows as
// one multiple ack, and the acks held ackHold (all of them when final) one
// by one; all in one socket write. It returns when the oldest ack still
// held is due, zero if none is.
func (w *ackWriter) flush(final bool) (next time.Time) {
	if len(w.held) == 0 {
		return time.Time{}
	}
	if w.cork != nil {
		w.cork.hold()
		defer func() { _ = w.cork.release() }()
	}
	now := time.Now()
	for ledger, h := range w.held {
		slices.SortFunc(h.ds, func(a, b *Delivery) int { return cmp.Compare(a.tag, b.tag) })
		tags := make([]uint64, len(h.ds))
		for i, d := range h.ds {
			tags[i] = d.tag
		}
		ch := h.ds[0].ch
		upTo, rest := ledger.run(tags)
		sent := len(tags) - len(rest)
		if upTo != 0 {
			_ = ch.Ack(upTo, true)
		}
		if final || now.Sub(h.oldest) >= ackHold {
			for _, t := range rest {
				_ = ch.Ack(t, false)
			}
			sent = len(tags)
		}
		// Marked only now that they are written: a multiple ack of a
		// later flush may then cover them.
		ledger.mark(tags[:sent]...)
		// Only now may the channel be closed: an ack must not be
		// overtaken by the channel's close.
		for _, d := range h.ds[:sent] {
			d.ackWritten()
		}
		if sent == len(h.ds) {
			delete(w.held, ledger)
			continue
		}
		// The ones left were held less than ackHold.
		h.ds = slices.Delete(h.ds, 0, sent)
		if due := h.oldest.Add(ackHold); next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next
}

// release lets go of everything held and queued without sending: the
// connection is gone and the broker requeues its unacked deliveries.
func (w *ackWriter) release() {
	for _, h := range w.held {
		for _, d := range h.ds {
			d.ackWritten()
		}
	}
	clear(w.held)
	for {
		select {
		case r := <-w.reqs:
			r.d.ackWritten()
		default:
			return
		}
	}
}

// drain stops the writer once it has sent every queued ack, and waits for
// it, at most closeTimeout: a graceful close must not drop acks that
// clients were already told about (DELETED), nor hang on a broker that
// stopped reading (the close of the connection then ends the writes).
func (w *ackWriter) drain() {
	w.once.Do(func() { close(w.quit) })
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-w.exited:
	case <-t.C:
	}
}
