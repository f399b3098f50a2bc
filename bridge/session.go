package bridge

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/bridge/internal/queues"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/mcproto"
)

// session is one client connection's queue state and the operations every
// framing runs on it. Each operation (set, get, getAll, delete, ackByID,
// touch, holds) checks its key, does its work, counts its outcome once and
// returns it; the framing spells the outcome. cmd, the command word the
// framing maps its request to, is the metric's label.
//
// A connection runs its commands one at a time, so only settling (which
// other connections and timers also do) needs the lock.
type session struct {
	srv *Server
	// client is the connection, for waits (kestrel's /t=), which must
	// send what is answered already and end with their client.
	client waitingClient
	// t is the broker identity the connection acts as: nil until it logs
	// in (auth.mode broker), else the default tenant or a logged-in
	// user's. Other connections read it (acks by id), so it is atomic.
	t atomic.Pointer[tenant]

	mu     sync.Mutex
	held   map[string]*reservation // guarded by mu; one per queue
	closed bool                    // guarded by mu
}

// waitingClient is what a wait needs of its connection.
type waitingClient interface {
	// flush sends the replies written so far.
	flush() error
	// watchClient returns a context that ends when the client goes away;
	// stop ends the watch.
	watchClient() (ctx context.Context, stop func())
}

func newSession(srv *Server, client waitingClient) *session {
	s := &session{srv: srv, client: client, held: make(map[string]*reservation)}
	if srv.cfg.Auth.Mode != config.AuthBroker || srv.cfg.Auth.Anonymous == config.AnonymousAllow {
		// No login needed: the amqp.urls user, until a login (if any).
		s.t.Store(srv.defaultTenant)
	}
	return s
}

// tenant is the identity the connection acts as (nil: not logged in).
// Queue operations run only once it is set.
func (s *session) tenant() *tenant { return s.t.Load() }

// item is one message handed out by a retrieval, or what a reply may tell
// of a held reservation (touch, mg without v).
type item struct {
	flags uint32
	body  []byte
	cas   uint64
	// r is the reservation the item is held by; nil for auto-ack and peek.
	r *reservation
	// autoAck is acked once the reply carrying it has been written.
	autoAck *amqp.Delivery
}

// queueName checks a key of a non-retrieval command: kestrel options are
// only for retrievals, and a name the broker would refuse never reaches it.
func queueName(key []byte) (string, bool) {
	if bytes.IndexByte(key, '/') >= 0 || !amqp.ValidName(key) {
		return "", false
	}
	return string(key), true
}

// retrievalKey is one parsed key of a retrieval.
type retrievalKey struct {
	key   []byte // as sent: replies echo it
	queue string
	opts  mcproto.KeyOptions
	lease leaseAsk
}

// parseRetrievalKey splits a key of a retrieval into its queue and its
// kestrel options; ok is false for bad options or a name the broker would
// refuse. A lease that is over before it starts makes a plain key a peek.
func parseRetrievalKey(key []byte, lease leaseAsk) (retrievalKey, bool) {
	queue, opts, err := mcproto.SplitKey(key)
	if err != nil || !amqp.ValidName(queue) {
		return retrievalKey{}, false
	}
	if lease.peek && !opts.Any() {
		opts.Peek = true
	}
	return retrievalKey{key: key, queue: string(queue), opts: opts, lease: lease}, true
}

// set publishes data to where key routes. Stored means confirmed by the
// broker and not returned.
func (s *session) set(cmd mcproto.Op, key []byte, flags uint32, exptime int64, data []byte) outcome {
	queue, ok := queueName(key)
	if !ok {
		return s.srv.count(cmd, tallySet, badRequest)
	}
	return s.srv.count(cmd, tallySet, s.store(s.srv.ctx, queue, flags, exptime, data))
}

// get serves one key of a retrieval: a hit hands out an item.
func (s *session) get(cmd mcproto.Op, key []byte, lease leaseAsk) (*item, outcome) {
	k, ok := parseRetrievalKey(key, lease)
	if !ok {
		return nil, s.srv.count(cmd, tallyGet, badRequest)
	}
	it, o := s.retrieve(k)
	return it, s.srv.count(cmd, tallyGet, o)
}

// getAll serves the keys of a text retrieval into items, one entry per key
// (nil: a miss). Every key is checked before any message is reserved, so a
// bad key never leaves reservations behind. Each key counts as a hit or a
// miss; the outcome is served unless the command failed, and then the
// client sees none of its messages: what it reserved is given back.
func (s *session) getAll(cmd mcproto.Op, keys [][]byte, lease leaseAsk, items []*item) ([]*item, outcome) {
	parsed := make([]retrievalKey, len(keys))
	for i, key := range keys {
		k, ok := parseRetrievalKey(key, lease)
		if !ok {
			return items, s.srv.count(cmd, tallyGet, badRequest)
		}
		parsed[i] = k
	}
	// A queue that a plain key of this line found empty (or held) is a
	// miss for the line's later plain keys of it, without asking the
	// broker again: a line looks at each queue once. Else one 64 KiB line
	// naming an empty queue thousands of times costs thousands of broker
	// round trips, served long after its client went away.
	var missed map[string]bool
	for _, k := range parsed {
		plain := !k.opts.Any() || k.opts == (mcproto.KeyOptions{Open: true})
		if plain && missed[k.queue] {
			s.srv.count(cmd, tallyGet, miss)
			items = append(items, nil)
			continue
		}
		it, o := s.retrieve(k)
		s.srv.count(cmd, tallyGet, o)
		if o.kind != outHit && o.kind != outMiss {
			for _, it := range items {
				s.requeueUnsent(it)
			}
			return items, o
		}
		if plain && o.kind == outMiss && len(parsed) > 1 {
			if missed == nil {
				missed = make(map[string]bool)
			}
			missed[k.queue] = true
		}
		items = append(items, it)
	}
	return items, served
}

// delete acks this connection's reservation on the queue.
func (s *session) delete(cmd mcproto.Op, key []byte) outcome {
	queue, ok := queueName(key)
	if !ok {
		return s.srv.count(cmd, tallyDelete, badRequest)
	}
	return s.srv.count(cmd, tallyDelete, acked(s.ack(queue), deleted))
}

// ackByID acks the reservation with that id on the queue, held by any
// connection (cas, binary set and delete with a cas, ms and md with C).
// success is how the command names it: stored for a cas, deleted for a
// delete.
func (s *session) ackByID(cmd mcproto.Op, key []byte, id uint64, success outcome) outcome {
	queue, ok := queueName(key)
	if !ok {
		return s.srv.count(cmd, tallyDelete, badRequest)
	}
	return s.srv.count(cmd, tallyDelete, acked(s.ackID(queue, id), success))
}

func acked(ok bool, success outcome) outcome {
	if ok {
		return success
	}
	return notFound
}

// touch sets the lease of this connection's reservation on the queue from
// a memcached exptime (see setLease). A touched reservation is described by
// the item (its id, flags and body), for replies that tell them.
func (s *session) touch(cmd mcproto.Op, key []byte, exptime int64) (*item, outcome) {
	queue, ok := queueName(key)
	if !ok {
		return nil, s.srv.count(cmd, tallyTouch, badRequest)
	}
	r := s.heldOn(queue)
	if r == nil || !s.setLease(r, exptime) {
		return nil, s.srv.count(cmd, tallyTouch, notFound)
	}
	return r.describe(), s.srv.count(cmd, tallyTouch, touched)
}

// holds reports whether this connection holds a reservation on the queue
// (mg without v or T): a hit describes it.
func (s *session) holds(cmd mcproto.Op, key []byte) (*item, outcome) {
	queue, ok := queueName(key)
	if !ok {
		return nil, s.srv.count(cmd, tallyNone, badRequest)
	}
	r := s.heldOn(queue)
	if r == nil || r.ended.Load() {
		return nil, s.srv.count(cmd, tallyNone, miss)
	}
	return r.describe(), s.srv.count(cmd, tallyNone, hit)
}

// store publishes body to where key routes.
func (s *session) store(ctx context.Context, key string, flags uint32, exptime int64, body []byte) outcome {
	srv := s.srv
	t := s.tenant()
	ttl, expired := expiration(exptime, time.Now())
	exchange, qs, ok, err := t.queues.Route(ctx, key)
	if err != nil {
		return srv.routeFailed(key, err)
	}
	if !ok {
		return notStored
	}
	if qs != nil {
		// Publishing keeps the queue's state (a pending publish).
		defer qs.Done()
	}
	if expired {
		// memcached stores it and never returns it; a queue gets the same
		// effect by not enqueueing what nobody may ever receive.
		return stored
	}
	// The publish may outlive this call (a confirm timeout), and the
	// readers reuse their buffers for small values: the broker gets its own
	// copy of those. A larger value's buffer is never reused, so it is
	// handed over as it is: a value pending here is in memory once, not
	// twice (limits.max_pending_bytes bounds what that memory is).
	owned := body
	if len(body) <= mcproto.MaxSharedBlock {
		owned = bytes.Clone(body)
	}
	msg := amqp.Message{
		Exchange:   exchange,
		RoutingKey: key,
		Headers:    amqp.Table{flagsHeader: int64(flags)},
		Expiration: ttl,
		Body:       owned,
	}
	start := time.Now()
	err = t.broker.Publish(ctx, msg)
	if qs != nil && errors.Is(err, amqp.ErrUnroutable) {
		// Our queue is gone (an operator deleted it): declare it again and
		// publish once more. Nothing was stored the first time.
		t.broker.Forget(key)
		var again *queues.Queue
		if _, again, ok, err = t.queues.Route(ctx, key); err != nil {
			return srv.routeFailed(key, err)
		}
		if again != nil {
			again.Done() // the first one is held until the end
		}
		if !ok {
			return notStored
		}
		err = t.broker.Publish(ctx, msg)
	}
	srv.metrics.PublishDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if !errors.Is(err, amqp.ErrUnroutable) && !errors.Is(err, amqp.ErrNacked) && !errors.Is(err, amqp.ErrAccessRefused) && srv.publishFailLog.allow(10*time.Second) {
			srv.log.Warn("publish failed; sets answer SERVER_ERROR", "err", err)
		}
		return brokerOutcome(err)
	}
	if qs != nil {
		qs.Published.Add(1)
		// A wait polling this queue looks now.
		t.broker.Published(key)
	}
	return stored
}

// retrieve applies a key's kestrel options and reserves the next message
// when they ask for one.
func (s *session) retrieve(k retrievalKey) (*item, outcome) {
	o := k.opts
	switch {
	case o.Abort:
		s.abort(k.queue)
		return nil, miss
	case o.Peek:
		return found(s.peek(s.srv.ctx, k.queue))
	}
	if o.Close {
		s.ack(k.queue)
		if !o.Open {
			return nil, miss
		}
	}
	if o.HasTimeout {
		// The wait holds up this connection: what is answered already
		// goes out first.
		if err := s.client.flush(); err != nil {
			return nil, miss
		}
		ctx, stop := s.client.watchClient()
		defer stop()
		return found(s.reserveWith(ctx, k.queue, k.lease, func(ctx context.Context) (*amqp.Delivery, error) {
			return s.tenant().broker.Wait(ctx, k.queue, o.Timeout)
		}))
	}
	return found(s.reserveWith(s.srv.ctx, k.queue, k.lease, func(ctx context.Context) (*amqp.Delivery, error) {
		return s.tenant().broker.Get(ctx, k.queue)
	}))
}

// found is a retrieval's outcome: a hit with an item, else a miss, or the
// broker's trouble.
func found(it *item, err error) (*item, outcome) {
	switch {
	case err != nil:
		return nil, brokerOutcome(err)
	case it == nil:
		return nil, miss
	}
	return it, hit
}

// reserveWith fetches the next message of queue for this connection. A nil
// item is a miss: empty queue, unknown queue, or a reservation already held
// on it.
func (s *session) reserveWith(ctx context.Context, queue string, lease leaseAsk, fetch func(context.Context) (*amqp.Delivery, error)) (*item, error) {
	srv := s.srv
	t := s.tenant()
	qs, err := srv.readable(ctx, t.queues, queue)
	if err != nil || qs == nil {
		return nil, err
	}
	// Until a reservation holds it, the fetch keeps the queue's state.
	defer qs.Done()
	manual := qs.Ack != config.AckAuto
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
		var again *queues.Queue
		if again, err = srv.readable(ctx, t.queues, queue); err != nil || again == nil {
			return nil, err
		}
		again.Done() // the first one is held until the end
		d, err = fetch(ctx)
	}
	if errors.Is(err, amqp.ErrQueueNotFound) || errors.Is(err, context.Canceled) {
		// Gone, or the client went away while it waited.
		return nil, nil
	}
	if err != nil || d == nil {
		return nil, err
	}
	if d.Redelivered {
		srv.metrics.Redelivered.WithLabelValues(qs.Label).Inc()
	}
	it := &item{flags: flagsFrom(d.Headers), body: d.Body}
	if !manual {
		it.autoAck = d
		return it, nil
	}
	leaseDur := qs.Lease
	if lease.set {
		leaseDur = lease.d
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
			srv.metrics.Requeued.WithLabelValues(qs.Label, metrics.ReasonDisconnect).Inc()
		}
		return nil, nil
	}
	s.held[queue] = r
	s.mu.Unlock()
	srv.registry.add(r)
	qs.Open.Add(1)
	srv.metrics.ReservationsOpen.WithLabelValues(qs.Label).Inc()
	r.timer.Reset(r.capLease(leaseDur, time.Now()))
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
	t := s.tenant()
	qs, err := s.srv.readable(ctx, t.queues, queue)
	if err != nil || qs == nil {
		return nil, err
	}
	defer qs.Done()
	d, err := t.broker.Get(ctx, queue)
	if errors.Is(err, amqp.ErrQueueNotFound) {
		return nil, nil
	}
	if err != nil || d == nil {
		return nil, err
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
			if qs := s.tenant().queues.Lookup(it.autoAck.Queue); qs != nil {
				qs.Acked.Add(1)
			}
		}
	}
}

// requeueUnsent puts back an item whose reply the client never got.
func (s *session) requeueUnsent(it *item) {
	switch {
	case it == nil:
	case it.r != nil:
		if it.r.end() {
			s.srv.settle(it.r, settleRequeue, metrics.ReasonAbort)
		}
	case it.autoAck != nil:
		_ = it.autoAck.Requeue()
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

// ackID acks the reservation with that id on queue, held by any connection.
func (s *session) ackID(queue string, id uint64) bool {
	r := s.srv.registry.get(id)
	// Ids are unique across users, but a user may only ack its own
	// reservations: another user's id is not found.
	if r == nil || r.queue.Name != queue || r.owner.tenant() != s.tenant() || !r.end() {
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
	return s.srv.settle(r, settleRequeue, metrics.ReasonAbort)
}

// setLease sets r's lease from a memcached exptime: 0 = the queue's
// reservation_timeout, negative (or a past unix time) = requeue now. false:
// r is over (ended, stale, or requeued by this call).
func (s *session) setLease(r *reservation, exptime int64) bool {
	if r.ended.Load() {
		return false
	}
	if r.delivery.Stale() {
		if r.end() {
			s.srv.settle(r, settleDrop, "")
		}
		return false
	}
	now := time.Now()
	lease, requeue := leaseFor(exptime, r.queue.Lease, now)
	if requeue {
		return s.abort(r.queue.Name)
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
	if s.held[r.queue.Name] == r {
		delete(s.held, r.queue.Name)
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
	// What it held is settled: its user's broker connections may go idle.
	if t := s.t.Swap(nil); t != nil && t != s.srv.defaultTenant {
		s.srv.tenants.release(t)
	}
}

// readable is queues.Readable for a retrieval: a queue refused for a queue
// limit (limits.max_queues, the broker's) is a miss, as an unknown one. So
// is a retrieval that ended while its queue was being declared (a wait
// whose client went away, or with commands filling the buffer behind it),
// as when it ends in line; it answered SERVER_ERROR broker error.
func (srv *Server) readable(ctx context.Context, table *queues.Table, queue string) (*queues.Queue, error) {
	qs, err := table.Readable(ctx, queue)
	if err != nil && (srv.queueRefused(queue, err) || errors.Is(err, context.Canceled)) {
		return nil, nil
	}
	return qs, err
}

// routeFailed is the outcome of a set whose key could not be routed.
func (srv *Server) routeFailed(key string, err error) outcome {
	if srv.queueRefused(key, err) {
		return tooManyQueues
	}
	return brokerOutcome(err)
}

// queueRefused reports whether err refuses a new queue for a queue limit,
// and counts and logs (once a minute) such a refusal.
func (srv *Server) queueRefused(queue string, err error) bool {
	switch {
	case errors.Is(err, queues.ErrTooManyQueues):
		srv.metrics.LimitRefused(metrics.LimitMaxQueues)
		if srv.maxQueuesLog.allow(time.Minute) {
			srv.log.Warn("limits.max_queues reached: sets of new queues answer SERVER_ERROR too many queues, gets miss",
				"max_queues", srv.cfg.Limits.MaxQueues, "queue", queue)
		}
		return true
	case errors.Is(err, amqp.ErrQueueLimit):
		if srv.brokerQueueLimitLog.allow(time.Minute) {
			srv.log.Warn("the broker refuses new queues (its queue limit): sets of new queues answer SERVER_ERROR too many queues, gets miss",
				"queue", queue, "err", err)
		}
		return true
	}
	return false
}
