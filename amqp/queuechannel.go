package amqp

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// queueChannel is a channel of a consume connection: a get channel of its
// pool, or the channel of one queue's consumer. RPCs on it are serialised
// (mu): amqp091-go matches RPC replies to callers by arrival order only.
type queueChannel struct {
	mu          sync.Mutex
	ch          *amqp091.Channel
	acks        *ackWriter   // of the channel's connection
	ledger      *tagLedger   // of the channel's delivery tags
	outstanding atomic.Int64 // deliveries not yet settled
	acking      atomic.Int64 // of those, acked but not yet written
	lastUse     atomic.Int64 // unix nanos
	// retired: a consumer channel whose consumer is gone; it closes once
	// its last delivery is settled.
	retired atomic.Bool
	closing atomic.Bool

	// Get channels: owner is the queue that took the channel while it
	// held no deliveries, checked the queues that share it since and when
	// they were checked to exist. Guarded by the pool's mu.
	owner   *fetcher
	checked map[*fetcher]time.Time

	// Consumer channels: the queue whose consumer it carries.
	consumerOf *fetcher
}

// settled counts one delivery (or a pin) off the channel; a retired
// channel closes with the last.
func (qc *queueChannel) settled(c *Client) {
	if qc.outstanding.Add(-1) == 0 && qc.retired.Load() {
		qc.closeAsync(c)
	}
}

// retire closes the channel once nothing on it is unsettled, now if
// nothing is.
func (qc *queueChannel) retire(c *Client) {
	qc.retired.Store(true)
	if qc.outstanding.Load() == 0 {
		qc.closeAsync(c)
	}
}

// closeAsync closes the channel once, without waiting for the broker. The
// close waits for the RPC in progress (a barrier after the last
// settlement): amqp091-go lets a frame be sent after channel.close, which
// the broker answers by closing the whole connection.
func (qc *queueChannel) closeAsync(c *Client) {
	if qc.closing.CompareAndSwap(false, true) {
		c.goFetch(func() {
			qc.mu.Lock()
			defer qc.mu.Unlock()
			_ = qc.ch.Close()
		})
	}
}

// gone reports whether qc is closed or closing.
func (qc *queueChannel) gone() bool { return qc.closing.Load() || qc.ch.IsClosed() }

// lockOpen locks qc for an RPC, waiting an RPC timeout at most (a call the
// broker does not answer, a stuck get, may hold qc for a minute); false
// (and unlocked) when that passed or qc is closed or closing.
func (qc *queueChannel) lockOpen(c *Client) bool {
	if !qc.mu.TryLock() {
		// On time out, bounded lets the lock go as soon as it is had.
		if c.bounded(func() error { qc.mu.Lock(); return nil }, func(error) { qc.mu.Unlock() }) != nil {
			return false
		}
	}
	if qc.gone() {
		qc.mu.Unlock()
		return false
	}
	return true
}

// lockError says why lockOpen failed: the channel closed, or a call held it
// for an RPC timeout.
func (qc *queueChannel) lockError() error {
	if qc.gone() {
		return ErrNotConnected
	}
	return fmt.Errorf("%w: its channel is busy with a call the broker has not answered", ErrBrokerTimeout)
}

// track makes d a delivery of qc, fetched for f.
func (qc *queueChannel) track(f *fetcher, m *amqp091.Delivery) *Delivery {
	d := &Delivery{
		Queue:       f.queue,
		Body:        m.Body,
		Headers:     m.Headers,
		Redelivered: m.Redelivered && !f.c.wasReturnedUnclaimed(m.MessageId),
		MessageID:   m.MessageId,
		DeliveredAt: time.Now(),
		ch:          qc.ch,
		tag:         m.DeliveryTag,
		qc:          qc,
		f:           f,
	}
	qc.outstanding.Add(1)
	f.held.Add(1)
	return d
}

// getTicket is a basic.get's place among those of its queue, and the
// give-backs begun before it.
type getTicket struct{ n, givebacks uint64 }

// startGetLocked counts a basic.get about to start in gets and gives it its
// ticket, in the same hold of mu in which the caller saw that no give-back
// runs.
func (f *fetcher) startGetLocked() getTicket {
	f.gets++
	f.tickets++
	return getTicket{n: f.tickets, givebacks: f.givebacks}
}

// endGetLocked uncounts a basic.get that ended with err. One answered
// lifts the fence of the give-backs begun before it started: they are done
// at the broker. (A give-back begun since may not be.)
func (f *fetcher) endGetLocked(t getTicket, err error) {
	f.gets--
	if err == nil && f.givebacks == t.givebacks {
		f.fence = false
	}
}

// basicGet fetches one message with basic.get on a get channel. nil, nil:
// the queue is empty. The caller counted it (startGetLocked), and uncounts
// it when basicGet returns (endGetLocked).
//
// A get the broker does not answer within the RPC timeout returns
// ErrBrokerTimeout but stays counted in gets, and in stuck, until the
// broker answers it or its channel dies, for one more RPC timeout at most.
// Meanwhile no other basic.get and no consumer of the queue starts: the
// message it takes is the oldest, and it goes first in buf (after those of
// stuck gets that started before it), for the next get or waiter. Given
// back to the broker instead, it would come back behind newer messages
// that later gets had handed out already (a hunt saw exactly that after
// slow give-backs). It goes back when a give-back went ahead meanwhile
// (requeue stops waiting for gets after a while), behind what went back
// first, and when the get was written off: the queue's gets go on without
// it after that second RPC timeout. RabbitMQ 3.x lets a basic.get of a
// quorum queue whose leader went away wait up to net_ticktime + 5 s (65 s);
// waiting for it that long stopped the queue on the gateway for a minute
// after a node stopped (the cluster test's node-stop under load).
func (f *fetcher) basicGet(t getTicket) (*Delivery, error) {
	qc, err := f.channel()
	if err != nil {
		return nil, err
	}
	qc.lastUse.Store(time.Now().UnixNano())
	var (
		msg amqp091.Delivery
		ok  bool
	)
	counted := make(chan struct{})
	var st stuckGet // guarded by f.mu
	err = qc.rpc(f.c, func() (err error) {
		msg, ok, err = qc.ch.Get(f.queue, false)
		return err
	}, func(err error) {
		<-counted
		f.mu.Lock()
		writtenOff := st.writtenOff
		if !writtenOff {
			st.timer.Stop()
			st.ended = true
			f.stuck--
			f.endGetLocked(t, err)
		}
		var back *Delivery
		switch {
		case err != nil:
		case writtenOff || f.givebacks != t.givebacks:
			if ok {
				back = qc.track(f, &msg)
			}
		default:
			if ok {
				f.insertLateLocked(buffered{d: qc.track(f, &msg), at: time.Now(), late: t.n})
				f.dispatchLocked()
				f.ensurePumpLocked() // it owns buf: hands it out or gives it back
				if !f.pumping {
					f.dropBufLocked() // the client is closing
				}
			}
		}
		f.notifyLocked()
		if f.pumping {
			f.poke()
		}
		if back == nil {
			f.mu.Unlock()
			return
		}
		// Begun in this hold of mu: a get woken by the notify above must
		// not start a basic.get that overtakes it.
		f.beginRequeueLocked()
		f.requeueLocked(nil, []*Delivery{back})
	})
	// bounded returns ErrBrokerTimeout itself, unwrapped, exactly when it
	// gave up on a call that goes on, and then calls late once it ends.
	if err == ErrBrokerTimeout {
		f.mu.Lock()
		f.gets++
		f.stuck++
		st.timer = time.AfterFunc(f.c.opts.RPCTimeout, func() { f.writeOff(&st, t) })
		f.mu.Unlock()
		close(counted)
	}
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %q", ErrQueueNotFound, f.queue)
		}
		if isAccessRefused(err) {
			return nil, accessRefused(fmt.Sprintf("get from queue %q", f.queue), err)
		}
		return nil, fmt.Errorf("%w: get from queue %q: %w", ErrNotConnected, f.queue, err)
	}
	if !ok {
		return nil, nil
	}
	return qc.track(f, &msg), nil
}

// stuckGet is the state of a basic.get that the broker did not answer in
// time, guarded by its fetcher's mu.
type stuckGet struct {
	timer *time.Timer // writes it off
	// ended: the broker answered it, or its channel died. writtenOff: the
	// queue's gets went on without it; what it brings late goes back.
	ended, writtenOff bool
}

// writeOff lets the queue's gets go on without a stuck basic.get that is
// still unanswered (see basicGet).
func (f *fetcher) writeOff(st *stuckGet, t getTicket) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st.ended {
		return
	}
	st.writtenOff = true
	f.stuck--
	f.endGetLocked(t, ErrBrokerTimeout)
	f.notifyLocked()
	if f.pumping {
		f.poke()
	}
	// At most a line per 10 s: a broker that froze strands a get on
	// every busy queue at once.
	total := f.c.writtenOff.Add(1)
	if f.c.writeOffLog.allow(10 * time.Second) {
		f.c.opts.Logger.Warn("a get the broker has not answered for two RPC timeouts is written off; the queue's gets go on without it",
			"queue", f.queue, "rpc_timeout", f.c.opts.RPCTimeout, "written_off_total", total)
	}
}

// dropBufLocked empties buf of a client that is closing, uncounting what
// it held: closing the connection requeues it.
func (f *fetcher) dropBufLocked() {
	for _, b := range f.buf {
		b.d.uncount()
	}
	clear(f.buf)
	f.buf = f.buf[:0]
}

// insertLateLocked puts a stuck get's delivery in buf: after those of stuck
// gets that started before it, ahead of the rest.
func (f *fetcher) insertLateLocked(b buffered) {
	i := 0
	for i < len(f.buf) && f.buf[i].late != 0 && f.buf[i].late < b.late {
		i++
	}
	f.buf = slices.Insert(f.buf, i, b)
}

// readyCount is the queue's count of ready messages, from a passive
// declaration on a get channel (a 404 closes it, and with it only this
// queue's deliveries, which the queue's deletion made void anyway).
func (f *fetcher) readyCount() (int, error) {
	qc, err := f.channel()
	if err != nil {
		return 0, err
	}
	var q amqp091.Queue
	err = qc.rpc(f.c, func() (err error) {
		q, err = qc.ch.QueueDeclarePassive(f.queue, true, false, false, false, nil)
		return err
	}, nil)
	if isNotFound(err) {
		return 0, fmt.Errorf("%w: %q", ErrQueueNotFound, f.queue)
	}
	return q.Messages, err
}

// barrier returns once the broker has processed every frame sent on qc
// before it: a basic.qos round trip. A reject or nack is a cast from the
// channel to the queue, sent before the channel answers the qos, so after
// the barrier a basic.get or a new consumer of this connection finds the
// message back in the queue.
//
// A channel that a stuck get holds for longer than an RPC timeout gets no
// barrier: the give-back goes on without it (the broker's process of that
// channel handles the reject only when the get is answered anyway), rather
// than stop the queue's gets and the client giving back for a minute.
func (f *fetcher) barrier(qc *queueChannel) {
	if !qc.lockOpen(f.c) {
		return
	}
	// prefetch-count 0 on a get channel changes nothing; a consumer
	// channel is never passed here while its consumer runs.
	_ = qc.rpc(f.c, func() error { return qc.ch.Qos(0, 0, false) }, nil)
}

// channelClosed forgets a closed channel's buffered deliveries: the broker
// has requeued them, and they must never be handed out. They are settled
// here, with nothing sent: a delivery that stayed counted in held would
// widen every later consumer's window by one and keep the fetcher from
// being released, fault after fault.
func (f *fetcher) channelClosed(qc *queueChannel) {
	f.mu.Lock()
	keep := f.buf[:0]
	var gone []*Delivery
	for _, b := range f.buf {
		if b.d.qc != qc {
			keep = append(keep, b)
		} else {
			gone = append(gone, b.d)
		}
	}
	clear(f.buf[len(keep):])
	f.buf = keep
	f.mu.Unlock()
	for _, d := range gone {
		d.Forget()
	}
}
