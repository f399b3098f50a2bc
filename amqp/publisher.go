package amqp

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Table is an AMQP field table (message headers).
type Table = amqp091.Table

// Message is one persistent, mandatory publish.
type Message struct {
	Exchange   string
	RoutingKey string
	Headers    Table
	// Expiration is the per-message TTL; 0 = none. Values above
	// MaxExpiration are sent as MaxExpiration.
	Expiration time.Duration
	// Body is owned by the publisher once Publish is called: it may still be
	// written after Publish gave up waiting.
	Body []byte
}

// MaxExpiration is the largest per-message expiration RabbitMQ honours:
// its timers stop at 2^32-1 ms (MAX_EXPIRY_TIMER), and where it checks
// expirations it refuses larger values, closing the publishing channel.
const MaxExpiration = (1<<32 - 1) * time.Millisecond

// publishQueueLen bounds the publishes waiting for a channel's writer; a full
// queue fails fast instead of piling up memory behind a stuck broker.
const publishQueueLen = 1024

// returnsBufferLen bounds the basic.returns waiting to be matched. amqp091-go
// hands a return to its listener before it processes the confirm that
// follows it, and drops it if the listener stays full for 5 s: the buffer
// is drained by every confirmed publish and by a ticker, so it never fills.
const returnsBufferLen = 4096

// maxAbandoned: a channel incarnation on which this many publishes gave up
// waiting for their confirm is replaced (its pending confirms would
// otherwise be held for as long as the channel lives).
const maxAbandoned = 1024

// publishRequest travels from Publish to a channel's writer and back.
type publishRequest struct {
	msg Message
	// sent carries the writer's outcome: the incarnation and confirmation
	// of the publish, or why it was not sent. Buffered 1.
	sent chan sentPublish
	// state arbitrates between the writer and a waiter that gives up
	// before the confirm: see the req… constants.
	state    atomic.Int32
	returned bool // guarded by the incarnation's mu
}

// Request states. queued → sending → sent is the writer's path; a waiter
// that gives up moves queued → abandoned (the writer then skips it) or
// sending → abandoned (the writer then forgets what it sent); once sent,
// the waiter forgets it itself.
const (
	reqQueued int32 = iota
	reqSending
	reqSent
	reqAbandoned
)

type sentPublish struct {
	inc *pubIncarnation
	tag uint64
	dc  *amqp091.DeferredConfirmation
	err error
}

// pubIncarnation is one confirm channel of a slot. Delivery tags and
// message ids are per incarnation.
type pubIncarnation struct {
	ch     *amqp091.Channel
	prefix string // message-id prefix: instance, slot and incarnation
	// returns is drained under mu only, so that a return the library has
	// handed over is either still in it or already marked.
	returns <-chan amqp091.Return
	// replace asks the slot to close this incarnation (buffered 1).
	replace chan struct{}
	// lastConfirm is when a publish of this incarnation last got its
	// confirm (unix nanos); a timed-out publish uses it to tell a stuck
	// channel from a slow queue.
	lastConfirm atomic.Int64
	abandoned   atomic.Int64

	// closeCause receives the error that closed the channel. amqp091-go
	// sends it before it settles the pending confirms, so a publish whose
	// confirm failed finds it there.
	closeCause <-chan *amqp091.Error

	mu      sync.Mutex
	pending map[uint64]*publishRequest // guarded by mu, by delivery tag
	cause   *amqp091.Error             // guarded by mu; taken from closeCause
}

// refused reports whether the channel was closed by the broker refusing
// this user access to exchange (403 naming it). Permission checks are made
// per exchange before routing, so a publish to that exchange still pending
// then was the refused one or came after it: none of them was stored.
// (Only permissions changed between two such publishes could make an
// earlier one stored; RabbitMQ closes the channel on the first refusal.)
func (inc *pubIncarnation) refused(exchange string) (*amqp091.Error, bool) {
	inc.mu.Lock()
	defer inc.mu.Unlock()
	if inc.cause == nil {
		select {
		case inc.cause = <-inc.closeCause:
		default:
		}
	}
	e := inc.cause
	if e == nil || e.Code != amqp091.AccessRefused {
		return nil, false
	}
	name := exchange
	if name == "" {
		name = "amq.default"
	}
	return e, strings.Contains(e.Reason, "exchange '"+name+"'")
}

// pubChannel is one slot of the confirm-channel pool. The slot outlives
// channel incarnations: when its channel dies while the connection lives, it
// opens a new one.
type pubChannel struct {
	p    *publisher
	id   int
	reqs chan *publishRequest
	// ready is true while a confirm channel and its writer serve reqs.
	ready atomic.Bool
	// alive is true while the slot runs on a live connection, including
	// while it replaces its channel: what is queued in reqs then is
	// written on the next channel, and failed when the slot stops.
	alive atomic.Bool
	// inflight counts publishes written but not settled, to pick the
	// least busy slot.
	inflight atomic.Int64
}

type publisher struct {
	opts     *Options
	slots    []*pubChannel
	next     atomic.Uint32
	blocked  atomic.Bool
	instance string // message-id prefix unique to this process
	serial   atomic.Uint64
	// cork wraps the current publish connection's socket.
	cork atomic.Pointer[corkConn]
}

func newPublisher(opts *Options, instance string) *publisher {
	p := &publisher{opts: opts, instance: instance}
	for i := range opts.PublishChannels {
		p.slots = append(p.slots, &pubChannel{
			p:    p,
			id:   i,
			reqs: make(chan *publishRequest, publishQueueLen),
		})
	}
	return p
}

// onUp starts the pool on a new connection.
func (p *publisher) onUp(ctx context.Context, conn *amqp091.Connection, wg *sync.WaitGroup) error {
	// Open every channel before declaring the connection usable, so a
	// broker that refuses channels fails the attempt visibly.
	chans := make([]*amqp091.Channel, len(p.slots))
	for i := range p.slots {
		ch, err := openConfirmChannel(conn)
		if err != nil {
			return err
		}
		chans[i] = ch
	}
	blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	p.blocked.Store(false)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range blocked {
			p.blocked.Store(b.Active)
			p.opts.Observer.Blocked(b.Active)
			if b.Active {
				p.opts.Logger.Warn("broker blocked publishing", "reason", b.Reason)
			} else {
				p.opts.Logger.Info("broker unblocked publishing")
			}
		}
		if p.blocked.Swap(false) {
			p.opts.Observer.Blocked(false)
		}
	}()
	for i, s := range p.slots {
		// Usable as soon as the supervisor reports the connection up:
		// publishes queue in s.reqs until the writer starts.
		s.alive.Store(true)
		s.ready.Store(true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, conn, chans[i])
		}()
	}
	return nil
}

func openConfirmChannel(conn *amqp091.Connection) (*amqp091.Channel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open publish channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("enable publisher confirms: %w", err)
	}
	return ch, nil
}

// Publish sends msg persistent and mandatory and waits for the broker's
// confirm, at most ConfirmTimeout. nil means confirmed and routed.
//
// The verdict is the broker's for this publish's own delivery tag, from
// amqp091-go's deferred confirmation: a basic.ack(multiple) settles only
// the tags still outstanding, so a nack that came first stays a nack. (The
// library's NotifyPublish stream re-confirms a parked nack with a later
// multiple's verdict; it is not used.)
func (p *publisher) Publish(ctx context.Context, msg Message) error {
	if p.blocked.Load() {
		return ErrBlocked
	}
	s := p.pick()
	if s == nil {
		return ErrNotConnected
	}
	req := &publishRequest{msg: msg, sent: make(chan sentPublish, 1)}
	select {
	case s.reqs <- req:
	default:
		// The writer is stuck (e.g. a write blocked by an alarm that we
		// have not been told of yet).
		return fmt.Errorf("%w: publish queue full", ErrNotConnected)
	}
	if !s.alive.Load() {
		// The slot stopped while we queued: nobody will write what is
		// queued, so answer it (ours included) now rather than at the
		// confirm timeout.
		s.failQueued(ErrNotConnected)
	}
	t := time.NewTimer(p.opts.ConfirmTimeout)
	defer t.Stop()
	var sent sentPublish
	select {
	case sent = <-req.sent:
	case <-t.C:
		return s.abandon(req, ErrConfirmTimeout)
	case <-ctx.Done():
		return s.abandon(req, ctx.Err())
	}
	if sent.err != nil {
		return sent.err
	}
	inc := sent.inc
	select {
	case <-sent.dc.Done():
	case <-t.C:
		s.giveUp(inc, sent.tag, time.Now())
		return ErrConfirmTimeout
	case <-ctx.Done():
		s.giveUp(inc, sent.tag, time.Time{})
		return ctx.Err()
	}
	defer s.inflight.Add(-1)
	acked := sent.dc.Acked()
	inc.mu.Lock()
	inc.drainReturnsLocked()
	delete(inc.pending, sent.tag)
	inc.mu.Unlock()
	if !acked && inc.ch.IsClosed() {
		if cause, ok := inc.refused(req.msg.Exchange); ok {
			return accessRefused("publish", cause)
		}
		// The library resolves what is pending on a closing channel as
		// not acked: the broker may well have stored it. (The channel is
		// marked closed before that happens.)
		return ErrChannelClosed
	}
	inc.lastConfirm.Store(time.Now().UnixNano())
	switch {
	case !acked:
		return ErrNacked
	case req.returned:
		return ErrUnroutable
	}
	return nil
}

// abandon gives up on a request before the writer reported it sent.
func (s *pubChannel) abandon(req *publishRequest, err error) error {
	if req.state.CompareAndSwap(reqQueued, reqAbandoned) || req.state.CompareAndSwap(reqSending, reqAbandoned) {
		return err
	}
	// The writer finished: the outcome is in req.sent, or is an error.
	if sent := <-req.sent; sent.err == nil {
		s.giveUp(sent.inc, sent.tag, time.Time{})
	}
	return err
}

// giveUp forgets a sent publish whose waiter stopped waiting. With timedOut
// set (the confirm timeout, not the caller's context), a channel that has
// confirmed nothing for a whole ConfirmTimeout is stuck: it is replaced, and
// the publishes still pending on it fail. A channel that confirms other
// publishes is kept: one slow queue must not fail everyone's sets.
func (s *pubChannel) giveUp(inc *pubIncarnation, tag uint64, timedOut time.Time) {
	s.inflight.Add(-1)
	inc.mu.Lock()
	delete(inc.pending, tag)
	inc.mu.Unlock()
	n := inc.abandoned.Add(1)
	stuck := !timedOut.IsZero() && timedOut.Sub(time.Unix(0, inc.lastConfirm.Load())) >= s.p.opts.ConfirmTimeout
	if stuck || n >= maxAbandoned {
		select {
		case inc.replace <- struct{}{}:
		default:
		}
	}
}

// drainReturnsLocked marks the publishes that the broker returned.
func (inc *pubIncarnation) drainReturnsLocked() {
	for {
		select {
		case r, ok := <-inc.returns:
			if !ok {
				return
			}
			if tag, ok := inc.tagOf(r.MessageId); ok {
				if req := inc.pending[tag]; req != nil {
					req.returned = true
				}
			}
		default:
			return
		}
	}
}

func (inc *pubIncarnation) tagOf(messageID string) (uint64, bool) {
	rest, ok := strings.CutPrefix(messageID, inc.prefix)
	if !ok {
		return 0, false
	}
	tag, err := strconv.ParseUint(rest, 10, 64)
	return tag, err == nil
}

// pick returns the ready slot with the fewest publishes in flight, starting
// the scan at a rotating index so that ties spread. When no slot is ready
// but one is replacing its channel on a live connection, the publish waits
// in that slot's queue for the new channel rather than failing while the
// broker is fine.
func (p *publisher) pick() *pubChannel {
	n := len(p.slots)
	start := int(p.next.Add(1)) % n
	var best, replacing *pubChannel
	for i := range n {
		s := p.slots[(start+i)%n]
		if !s.ready.Load() {
			if replacing == nil && s.alive.Load() {
				replacing = s
			}
			continue
		}
		if best == nil || s.inflight.Load() < best.inflight.Load() {
			best = s
		}
	}
	if best == nil {
		return replacing
	}
	return best
}

// run serves reqs on channel incarnations until the connection closes or ctx
// ends.
func (s *pubChannel) run(ctx context.Context, conn *amqp091.Connection, ch *amqp091.Channel) {
	defer func() {
		s.alive.Store(false)
		s.failQueued(ErrNotConnected)
	}()
	for {
		s.serve(ctx, ch)
		if ctx.Err() != nil || conn.IsClosed() {
			return
		}
		var err error
		for {
			if ch, err = openConfirmChannel(conn); err == nil {
				break
			}
			s.p.opts.Logger.Warn("reopen publish channel", "slot", s.id, "err", err)
			if !sleepCtx(ctx, 200*time.Millisecond) || conn.IsClosed() {
				return
			}
		}
	}
}

// serve owns one channel incarnation: a writer goroutine sends publishes
// while this one keeps the returns drained, until the channel is gone or
// must be replaced. Publishes still pending then resolve through their
// deferred confirmations, which the library settles when the channel
// closes.
func (s *pubChannel) serve(ctx context.Context, ch *amqp091.Channel) {
	inc := &pubIncarnation{
		ch:         ch,
		prefix:     fmt.Sprintf("%s-%d.%d.", s.p.instance, s.id, s.p.serial.Add(1)),
		returns:    ch.NotifyReturn(make(chan amqp091.Return, returnsBufferLen)),
		replace:    make(chan struct{}, 1),
		pending:    make(map[uint64]*publishRequest),
		closeCause: ch.NotifyClose(make(chan *amqp091.Error, 1)),
	}
	inc.lastConfirm.Store(time.Now().UnixNano())
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))

	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		s.write(inc, stop)
	}()
	s.ready.Store(true)

	defer func() {
		s.ready.Store(false)
		close(stop)
		// The writer first: a publish sent after our channel.close would
		// make the broker close the whole connection.
		writer.Wait()
		// Closing resolves every deferred confirmation still pending
		// (as not acked, on a closed channel: unknown to the waiter).
		_ = ch.Close()
	}()

	drain := time.NewTicker(100 * time.Millisecond)
	defer drain.Stop()
	for {
		select {
		case <-drain.C:
			inc.mu.Lock()
			inc.drainReturnsLocked()
			inc.mu.Unlock()
		case <-closed:
			return
		case <-inc.replace:
			s.p.opts.Logger.Warn("publish channel confirmed nothing for the confirm timeout; replacing it", "slot", s.id)
			return
		case <-ctx.Done():
			return
		}
	}
}

// write sends queued publishes on the incarnation's channel until stop
// closes.
func (s *pubChannel) write(inc *pubIncarnation, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case req := <-s.reqs:
			// Everything queued behind this publish goes out in the same
			// write.
			cork := s.p.cork.Load()
			if cork != nil {
				cork.hold()
			}
			for n := 0; req != nil && n < writeBatch; n++ {
				s.send(inc, req)
				select {
				case req = <-s.reqs:
				default:
					req = nil
				}
			}
			if req != nil {
				s.send(inc, req)
			}
			if cork != nil {
				_ = cork.release()
			}
		}
	}
}

// writeBatch bounds the publishes written under one cork.
const writeBatch = 64

func (s *pubChannel) send(inc *pubIncarnation, req *publishRequest) {
	if !req.state.CompareAndSwap(reqQueued, reqSending) {
		return // its waiter gave up
	}
	// Only this goroutine publishes on the channel, so the next sequence
	// number is the delivery tag that the confirm and the message id carry.
	tag := inc.ch.GetNextPublishSeqNo()
	inc.mu.Lock()
	inc.pending[tag] = req
	inc.mu.Unlock()
	s.inflight.Add(1)

	pub := amqp091.Publishing{
		Headers:      req.msg.Headers,
		DeliveryMode: amqp091.Persistent,
		MessageId:    inc.prefix + strconv.FormatUint(tag, 10),
		Body:         req.msg.Body,
	}
	if exp := min(req.msg.Expiration, MaxExpiration); exp > 0 {
		pub.Expiration = strconv.FormatInt(exp.Milliseconds(), 10)
	}
	dc, err := inc.ch.PublishWithDeferredConfirm(req.msg.Exchange, req.msg.RoutingKey, true, false, pub)
	if err == nil && dc == nil {
		err = fmt.Errorf("channel not in confirm mode")
	}
	if err != nil {
		inc.mu.Lock()
		delete(inc.pending, tag)
		inc.mu.Unlock()
		s.inflight.Add(-1)
		req.state.Store(reqSent)
		req.sent <- sentPublish{err: fmt.Errorf("%w: %v", ErrNotConnected, err)}
		return
	}
	if !req.state.CompareAndSwap(reqSending, reqSent) {
		// The waiter gave up while we wrote.
		s.giveUp(inc, tag, time.Time{})
		return
	}
	req.sent <- sentPublish{inc: inc, tag: tag, dc: dc}
}

// failQueued answers publishes that never reached a channel.
func (s *pubChannel) failQueued(err error) {
	for {
		select {
		case req := <-s.reqs:
			req.state.Store(reqSent)
			req.sent <- sentPublish{err: err}
		default:
			return
		}
	}
}
