package amqp

import (
	"fmt"
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

// lockOpen locks qc for an RPC; false (and unlocked) when it is closed or
// closing.
func (qc *queueChannel) lockOpen() bool {
	qc.mu.Lock()
	if qc.closing.Load() || qc.ch.IsClosed() {
		qc.mu.Unlock()
		return false
	}
	return true
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

// basicGet fetches one message with basic.get on a get channel. nil, nil:
// the queue is empty.
func (f *fetcher) basicGet() (*Delivery, error) {
	qc, err := f.channel()
	if err != nil {
		return nil, err
	}
	qc.lastUse.Store(time.Now().UnixNano())
	var (
		msg amqp091.Delivery
		ok  bool
	)
	err = qc.rpc(f.c, func() (err error) {
		msg, ok, err = qc.ch.Get(f.queue, false)
		return err
	}, func() {
		if ok {
			// Fetched after we gave up: nobody has it.
			d := qc.track(f, &msg)
			f.c.noteReturnedUnclaimed(d.MessageID)
			_ = d.sendSettle(settleNackUnclaimed)
		}
	})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %q", ErrQueueNotFound, f.queue)
		}
		return nil, fmt.Errorf("%w: get from queue %q: %w", ErrNotConnected, f.queue, err)
	}
	if !ok {
		return nil, nil
	}
	return qc.track(f, &msg), nil
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
func (f *fetcher) barrier(qc *queueChannel) {
	if !qc.lockOpen() {
		return
	}
	// prefetch-count 0 on a get channel changes nothing; a consumer
	// channel is never passed here while its consumer runs.
	_ = qc.rpc(f.c, func() error { return qc.ch.Qos(0, 0, false) }, nil)
}

// channelClosed forgets a closed channel's buffered deliveries: the broker
// has requeued them, and they must never be handed out.
func (f *fetcher) channelClosed(qc *queueChannel) {
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := f.buf[:0]
	for _, b := range f.buf {
		if b.d.qc != qc {
			keep = append(keep, b)
		}
	}
	clear(f.buf[len(keep):])
	f.buf = keep
}
