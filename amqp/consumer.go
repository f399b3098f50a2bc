package amqp

import (
	"context"
	"fmt"
	"sync"
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

	ch      *amqp091.Channel
	tag     uint64
	settled atomic.Bool
}

// Ack acknowledges the delivery. ErrStale means its channel is gone and the
// broker has requeued it: nothing was sent.
func (d *Delivery) Ack() error {
	return d.settle(func() error { return d.ch.Ack(d.tag, false) })
}

// Requeue puts the delivery back with basic.reject(requeue), which quorum
// queues count toward their delivery limit.
func (d *Delivery) Requeue() error {
	return d.settle(func() error { return d.ch.Reject(d.tag, true) })
}

// Stale reports whether the delivering channel is gone.
func (d *Delivery) Stale() bool { return d.ch.IsClosed() }

func (d *Delivery) settle(send func() error) error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrSettled
	}
	// A closed channel object is never reopened (we do not use the
	// library's recovery), so its tags can never name another message.
	if d.ch.IsClosed() {
		return ErrStale
	}
	if err := send(); err != nil {
		return fmt.Errorf("%w: %v", ErrStale, err)
	}
	return nil
}

// getSlot is one channel of a consume connection that fetches deliveries
// with basic.get. Fetches on a channel are serialised: amqp091-go matches
// RPC replies to callers by arrival order only.
type getSlot struct {
	mu sync.Mutex
	ch *amqp091.Channel // guarded by mu; nil while down
}

type consumeConn struct {
	sup   *supervisor
	slots []*getSlot
	next  atomic.Uint32
}

func newConsumeConn(opts *Options) *consumeConn {
	cc := &consumeConn{}
	for range opts.GetChannels {
		cc.slots = append(cc.slots, &getSlot{})
	}
	return cc
}

// onUp opens the get channels on a new connection.
func (cc *consumeConn) onUp(ctx context.Context, conn *amqp091.Connection, wg *sync.WaitGroup, obs Observer, log func(msg string, args ...any)) error {
	chans := make([]*amqp091.Channel, len(cc.slots))
	for i := range cc.slots {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open consume channel: %w", err)
		}
		chans[i] = ch
	}
	for i, s := range cc.slots {
		// Usable as soon as the supervisor reports the connection up.
		s.mu.Lock()
		s.ch = chans[i]
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, conn, chans[i], obs, log)
		}()
	}
	return nil
}

// run keeps the slot's channel open for the connection's life. When the
// channel dies, every delivery fetched on it is stale; the observer hears of
// it so reservations can be dropped at once rather than on their next use.
func (s *getSlot) run(ctx context.Context, conn *amqp091.Connection, ch *amqp091.Channel, obs Observer, log func(msg string, args ...any)) {
	for {
		closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
		s.mu.Lock()
		s.ch = ch
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.clear()
			// Closing the connection (the supervisor does) requeues
			// everything unacked on this channel.
			return
		case err := <-closed:
			s.clear()
			obs.DeliveriesLost()
			if err != nil {
				log("consume channel closed", "err", err)
			}
		}
		for {
			if conn.IsClosed() || ctx.Err() != nil {
				return
			}
			var err error
			if ch, err = conn.Channel(); err == nil {
				break
			}
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return
			}
		}
	}
}

func (s *getSlot) clear() {
	s.mu.Lock()
	s.ch = nil
	s.mu.Unlock()
}

// get fetches one message with basic.get. ok is false when the queue is
// empty.
func (s *getSlot) get(queue string) (*Delivery, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		return nil, false, ErrNotConnected
	}
	msg, ok, err := s.ch.Get(queue, false)
	if err != nil {
		return nil, false, fmt.Errorf("%w: get from queue %q: %v", ErrNotConnected, queue, err)
	}
	if !ok {
		return nil, false, nil
	}
	return &Delivery{
		Queue:       queue,
		Body:        msg.Body,
		Headers:     msg.Headers,
		Redelivered: msg.Redelivered,
		MessageID:   msg.MessageId,
		ch:          s.ch,
		tag:         msg.DeliveryTag,
	}, true, nil
}

// pick prefers an idle slot so that one slow fetch does not hold up others.
func (cc *consumeConn) pick() *getSlot {
	n := len(cc.slots)
	start := int(cc.next.Add(1)) % n
	for i := range n {
		s := cc.slots[(start+i)%n]
		if s.mu.TryLock() {
			up := s.ch != nil
			s.mu.Unlock()
			if up {
				return s
			}
		}
	}
	return cc.slots[start]
}
