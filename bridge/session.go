package bridge

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/config"
)

// flagsHeader carries memcache flags through RabbitMQ as a signed 64-bit
// integer, which every AMQP client can read and write.
const flagsHeader = "x-mc-flags"

// session is one client connection's queue state, whatever its framing: the
// text protocol today, binary and meta framings share the same operations.
// A connection runs its commands one at a time, so only settling (which
// other connections and timers also do) needs the lock.
type session struct {
	srv *Server

	mu     sync.Mutex
	held   map[string]*reservation // guarded by mu; one per queue
	closed bool                    // guarded by mu
}

func newSession(srv *Server) *session {
	return &session{srv: srv, held: make(map[string]*reservation)}
}

// errNotStored: the broker returned or nacked the message.
var errNotStored = errors.New("not stored")

// serverError becomes "SERVER_ERROR <msg>": the outcome is unknown or the
// broker is unusable.
type serverError struct{ msg string }

func (e *serverError) Error() string { return e.msg }

// brokerError turns an amqp error into what the client is told.
func brokerError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, amqp.ErrUnroutable), errors.Is(err, amqp.ErrNacked):
		return errNotStored
	case errors.Is(err, amqp.ErrBlocked):
		return &serverError{"broker blocked publishing (resource alarm)"}
	case errors.Is(err, amqp.ErrConfirmTimeout):
		return &serverError{"broker confirm timed out"}
	case errors.Is(err, amqp.ErrBrokerTimeout):
		return &serverError{"broker did not answer in time"}
	case errors.Is(err, amqp.ErrChannelClosed):
		return &serverError{"broker channel lost before confirm"}
	case errors.Is(err, amqp.ErrNotConnected), errors.Is(err, amqp.ErrClosed):
		return &serverError{"broker not connected"}
	default:
		var terr *amqp.TopologyError
		if errors.As(err, &terr) {
			return &serverError{"broker refused queue declaration"}
		}
		return &serverError{"broker error"}
	}
}

// store publishes body to where key routes. nil means STORED: confirmed by
// the broker and not returned.
func (s *session) store(ctx context.Context, key string, flags uint32, exptime int64, body []byte) error {
	srv := s.srv
	ttl, expired := expiration(exptime, time.Now())
	exchange, qs, ok, err := srv.queues.route(ctx, key)
	if err != nil {
		return brokerError(err)
	}
	if !ok {
		return errNotStored
	}
	if expired {
		// memcached stores it and never returns it; a queue gets the same
		// effect by not enqueueing what nobody may ever receive.
		return nil
	}
	// The publish may outlive this call (a confirm timeout), and the
	// parser reuses its buffer: the broker gets its own copy.
	owned := make([]byte, len(body))
	copy(owned, body)
	msg := amqp.Message{
		Exchange:   exchange,
		RoutingKey: key,
		Headers:    amqp.Table{flagsHeader: int64(flags)},
		Expiration: ttl,
		Body:       owned,
	}
	start := time.Now()
	err = srv.broker.Publish(ctx, msg)
	if qs != nil && errors.Is(err, amqp.ErrUnroutable) {
		// Our queue is gone (an operator deleted it): declare it again and
		// publish once more. Nothing was stored the first time.
		srv.broker.Forget(key)
		if _, qs, ok, err = srv.queues.route(ctx, key); err != nil || !ok {
			return brokerError(err)
		}
		err = srv.broker.Publish(ctx, msg)
	}
	srv.metrics.publishDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if !errors.Is(err, amqp.ErrUnroutable) && !errors.Is(err, amqp.ErrNacked) && srv.publishFailLog.allow(10*time.Second) {
			srv.log.Warn("publish failed; sets answer SERVER_ERROR", "err", err)
		}
		return brokerError(err)
	}
	if qs != nil {
		qs.published.Add(1)
		// A wait polling this queue looks now.
		srv.broker.Published(key)
	}
	return nil
}

// item is one message handed out by a retrieval.
type item struct {
	flags uint32
	body  []byte
	cas   uint64
	// r is the reservation the item is held by; nil for auto-ack and peek.
	r *reservation
	// autoAck is acked once the reply carrying it has been written.
	autoAck *amqp.Delivery
}

// reserve fetches the next message of queue for this connection. A nil item
// is a miss: empty queue, unknown queue, or a reservation already held on it.
func (s *session) reserve(ctx context.Context, queue string, lease time.Duration, leaseSet bool) (*item, error) {
	return s.reserveWith(ctx, queue, lease, leaseSet, func(ctx context.Context) (*amqp.Delivery, error) {
		return s.srv.broker.Get(ctx, queue)
	})
}

// reserveWait is reserve with kestrel's /t=<ms>: it waits up to timeout for
// a message to arrive.
func (s *session) reserveWait(ctx context.Context, queue string, timeout, lease time.Duration, leaseSet bool) (*item, error) {
	return s.reserveWith(ctx, queue, lease, leaseSet, func(ctx context.Context) (*amqp.Delivery, error) {
		return s.srv.broker.Wait(ctx, queue, timeout)
	})
}

func (s *session) reserveWith(ctx context.Context, queue string, lease time.Duration, leaseSet bool, fetch func(context.Context) (*amqp.Delivery, error)) (*item, error) {
	srv := s.srv
	qs, err := srv.queues.readable(ctx, queue)
	if err != nil {
		return nil, brokerError(err)
	}
	if qs == nil {
		return nil, nil
	}
	manual := qs.ack != config.AckAuto
	if manual {
		s.mu.Lock()
		busy := s.closed || s.held[queue] != nil || len(s.held) >= srv.cfg.Limits.MaxReservationsPerConnection
		s.mu.Unlock()
		if busy {
			return nil, nil
		}
	}
	d, err := fetch(ctx)
	if errors.Is(err, amqp.ErrQueueNotFound) {
		// Deleted behind our back (the client forgot it): declare it
		// again if we may, and try once more.
		if qs, err = srv.queues.readable(ctx, queue); err != nil || qs == nil {
			return nil, brokerError(err)
		}
		d, err = fetch(ctx)
	}
	if errors.Is(err, amqp.ErrQueueNotFound) || errors.Is(err, context.Canceled) {
		// Gone, or the client went away while it waited.
		return nil, nil
	}
	if err != nil {
		return nil, brokerError(err)
	}
	if d == nil {
		return nil, nil
	}
	if d.Redelivered {
		srv.metrics.redelivered.WithLabelValues(qs.label).Inc()
	}
	it := &item{flags: flagsFrom(d.Headers), body: d.Body}
	if !manual {
		it.autoAck = d
		return it, nil
	}
	if !leaseSet {
		lease = qs.lease
	}
	r := &reservation{
		id:       srv.ids.next(),
		queue:    qs,
		owner:    s,
		delivery: d,
		flags:    it.flags,
		body:     d.Body,
	}
	// The timer exists, stopped, before anyone else can see r.
	r.timer = time.AfterFunc(time.Hour, func() { srv.expire(r) })
	r.timer.Stop()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		// The connection went away while we fetched.
		if r.end() {
			_ = d.Requeue()
			srv.metrics.requeued.WithLabelValues(qs.label, reasonDisconnect).Inc()
		}
		return nil, nil
	}
	s.held[queue] = r
	s.mu.Unlock()
	srv.registry.add(r)
	qs.open.Add(1)
	srv.metrics.reservationsOpen.WithLabelValues(qs.label).Inc()
	r.timer.Reset(r.capLease(lease, time.Now()))
	it.r = r
	it.cas = r.id
	return it, nil
}

// peek returns the head of the queue without keeping it: it is fetched and
// put straight back (the broker marks it redelivered). A message this
// connection holds on the queue is shown again instead.
func (s *session) peek(ctx context.Context, queue string) (*item, error) {
	if r := s.heldOn(queue); r != nil {
		return &item{flags: r.flags, body: r.body}, nil
	}
	qs, err := s.srv.queues.readable(ctx, queue)
	if err != nil || qs == nil {
		return nil, brokerError(err)
	}
	d, err := s.srv.broker.Get(ctx, queue)
	if errors.Is(err, amqp.ErrQueueNotFound) {
		return nil, nil
	}
	if err != nil || d == nil {
		return nil, brokerError(err)
	}
	_ = d.Requeue()
	return &item{flags: flagsFrom(d.Headers), body: d.Body}, nil
}

// delivered finishes a retrieval once its reply was written (or failed to
// be): auto-ack messages are acked only when the client has them.
func (s *session) delivered(items []*item, writeErr error) {
	for _, it := range items {
		if it == nil || it.autoAck == nil {
			continue
		}
		if writeErr != nil {
			_ = it.autoAck.Requeue()
			continue
		}
		if it.autoAck.Ack() == nil {
			if qs := s.srv.queues.state(it.autoAck.Queue); qs != nil {
				qs.acked.Add(1)
			}
		}
	}
}

// heldOn returns this connection's reservation on queue, or nil.
func (s *session) heldOn(queue string) *reservation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[queue]
}

// ack acks this connection's reservation on queue (delete). false: none.
func (s *session) ack(queue string) bool {
	r := s.heldOn(queue)
	if r == nil || !r.end() {
		return false
	}
	return s.srv.settle(r, settleAck, "")
}

// ackID acks the reservation with that id on queue, held by any connection
// (cas, meta md C<id>, binary DELETE with cas).
func (s *session) ackID(queue string, id uint64) bool {
	r := s.srv.registry.get(id)
	if r == nil || r.queue.name != queue || !r.end() {
		return false
	}
	return s.srv.settle(r, settleAck, "")
}

// abort requeues this connection's reservation on queue now.
func (s *session) abort(queue string) bool {
	r := s.heldOn(queue)
	if r == nil || !r.end() {
		return false
	}
	return s.srv.settle(r, settleRequeue, reasonAbort)
}

// touch sets the lease of this connection's reservation on queue from a
// memcached exptime: 0 = the queue's reservation_timeout, negative (or a
// past unix time) = requeue now.
func (s *session) touch(queue string, exptime int64) bool {
	r := s.heldOn(queue)
	if r == nil || r.ended.Load() {
		return false
	}
	if r.delivery.Stale() {
		if r.end() {
			s.srv.settle(r, settleDrop, "")
		}
		return false
	}
	now := time.Now()
	lease, requeue := leaseFor(exptime, r.queue.lease, now)
	if requeue {
		return s.abort(queue)
	}
	lease = r.capLease(lease, now)
	if lease <= 0 {
		// The broker's consumer_timeout is upon it: it goes back now.
		s.srv.expire(r)
		return false
	}
	r.timer.Reset(lease)
	// The old lease may have run out just now.
	return !r.ended.Load()
}

// forget removes r from the held set if it is still there.
func (s *session) forget(r *reservation) {
	s.mu.Lock()
	if s.held[r.queue.name] == r {
		delete(s.held, r.queue.name)
	}
	s.mu.Unlock()
}

// close requeues everything the connection holds: a worker that died never
// acked, so the message goes back.
func (s *session) close(reason string) {
	s.mu.Lock()
	s.closed = true
	held := s.held
	s.held = make(map[string]*reservation)
	s.mu.Unlock()
	for _, r := range held {
		if r.end() {
			s.srv.settle(r, settleRequeue, reason)
		}
	}
}

// flagsFrom reads memcache flags from the message headers. A missing,
// non-integer or out-of-range value (memcache flags are 32-bit unsigned)
// reads as 0, so messages from any AMQP publisher can be fetched.
func flagsFrom(h amqp.Table) uint32 {
	var n int64
	switch v := h[flagsHeader].(type) {
	case int64:
		n = v
	case int32:
		n = int64(v)
	case int16:
		n = int64(v)
	case int8:
		n = int64(v)
	case int:
		n = int64(v)
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	case uint64:
		if v > math.MaxUint32 {
			return 0
		}
		n = int64(v)
	default:
		return 0
	}
	if n < 0 || n > math.MaxUint32 {
		return 0
	}
	return uint32(n)
}

// relativeLimit: memcached reads an exptime up to 30 days as seconds from
// now, anything larger as a unix time.
const relativeLimit = 30 * 24 * 60 * 60

// expiration turns a set's exptime into a per-message TTL (0 = none).
// expired means the item is dead on arrival.
func expiration(exptime int64, now time.Time) (ttl time.Duration, expired bool) {
	switch {
	case exptime == 0:
		return 0, false
	case exptime < 0:
		return 0, true
	case exptime <= relativeLimit:
		return time.Duration(exptime) * time.Second, false
	default:
		d := time.Unix(exptime, 0).Sub(now)
		if d < time.Millisecond {
			return 0, true
		}
		return d, false
	}
}

// leaseFor turns a touch/gat exptime into a lease.
func leaseFor(exptime int64, queueDefault time.Duration, now time.Time) (lease time.Duration, requeue bool) {
	if exptime == 0 {
		return queueDefault, false
	}
	d, expired := expiration(exptime, now)
	if expired {
		return 0, true
	}
	return d, false
}
