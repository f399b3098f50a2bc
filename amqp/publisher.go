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
	// Expiration is the per-message TTL; 0 = none.
	Expiration time.Duration
	// Body is owned by the publisher once Publish is called: it may still be
	// written after Publish gave up waiting.
	Body []byte
}

// publishQueueLen bounds the publishes waiting for a channel's writer; a full
// queue fails fast instead of piling up memory behind a stuck broker.
const publishQueueLen = 1024

// publishRequest travels from Publish to a channel's writer and back.
type publishRequest struct {
	msg  Message
	done chan error // buffered 1: whoever resolves never blocks
	// abandoned is set when the waiter gave up, so a writer that has not
	// sent it yet skips it.
	abandoned atomic.Bool
	returned  bool // guarded by pubChannel.pmu
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
	// replace asks the slot to drop its channel (a confirm never came).
	replace chan struct{}
	// inflight counts publishes written but not confirmed, to pick the
	// least busy slot.
	inflight atomic.Int64

	pmu     sync.Mutex
	pending map[uint64]*publishRequest // guarded by pmu, by delivery tag
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
			p:       p,
			id:      i,
			reqs:    make(chan *publishRequest, publishQueueLen),
			replace: make(chan struct{}, 1),
			pending: make(map[uint64]*publishRequest),
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
func (p *publisher) Publish(ctx context.Context, msg Message) error {
	if p.blocked.Load() {
		return ErrBlocked
	}
	s := p.pick()
	if s == nil {
		return ErrNotConnected
	}
	req := &publishRequest{msg: msg, done: make(chan error, 1)}
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
	select {
	case err := <-req.done:
		return err
	case <-t.C:
		req.abandoned.Store(true)
		select {
		case s.replace <- struct{}{}:
		default:
		}
		return ErrConfirmTimeout
	case <-ctx.Done():
		req.abandoned.Store(true)
		return ctx.Err()
	}
}

// pick returns the ready slot with the fewest publishes in flight, starting
// the scan at a rotating index so that ties spread. When no slot is ready
// but one is replacing its channel on a live connection (after a confirm
// timeout), the publish waits in that slot's queue for the new channel
// rather than failing while the broker is fine.
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

// serve owns one channel incarnation: a writer goroutine sends publishes,
// this goroutine matches returns and confirms to them. It returns when the
// channel is gone, after failing every publish still pending on it.
func (s *pubChannel) serve(ctx context.Context, ch *amqp091.Channel) {
	// Returns are unbuffered on purpose: amqp091-go hands a return to us
	// before it processes the ack that follows it, and since this goroutine
	// handles both streams in order, a message's return is always recorded
	// before its confirm is.
	returns := ch.NotifyReturn(make(chan amqp091.Return))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, publishQueueLen))
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	prefix := fmt.Sprintf("%s-%d.%d.", s.p.instance, s.id, s.p.serial.Add(1))

	// A replace asked for by publishes that timed out on an earlier
	// incarnation is not about this channel, which has sent nothing yet.
	select {
	case <-s.replace:
	default:
	}

	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		s.write(ch, prefix, stop)
	}()
	s.ready.Store(true)

	defer func() {
		s.ready.Store(false)
		close(stop)
		closeDone := make(chan struct{})
		go func() {
			defer close(closeDone)
			_ = ch.Close()
		}()
		// Keep matching returns and confirms until the library closes
		// both listeners: acks that race the close still resolve their
		// publishes, and the library is never left waiting on us.
		for returns != nil || confirms != nil {
			select {
			case r, ok := <-returns:
				if !ok {
					returns = nil
					continue
				}
				s.markReturned(r.MessageId, prefix)
			case c, ok := <-confirms:
				if !ok {
					confirms = nil
					continue
				}
				s.resolve(c)
			}
		}
		<-closeDone
		writer.Wait()
		s.failPending(ErrChannelClosed)
	}()

	for {
		select {
		case r, ok := <-returns:
			if !ok {
				return
			}
			s.markReturned(r.MessageId, prefix)
		case c, ok := <-confirms:
			if !ok {
				return
			}
			s.resolve(c)
		case <-closed:
			return
		case <-s.replace:
			s.p.opts.Logger.Warn("publish confirm timed out; replacing channel", "slot", s.id)
			return
		case <-ctx.Done():
			return
		}
	}
}

// write sends queued publishes on ch until stop closes.
func (s *pubChannel) write(ch *amqp091.Channel, prefix string, stop <-chan struct{}) {
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
				if !req.abandoned.Load() {
					s.send(ch, prefix, req)
				}
				select {
				case req = <-s.reqs:
				default:
					req = nil
				}
			}
			if req != nil && !req.abandoned.Load() {
				s.send(ch, prefix, req)
			}
			if cork != nil {
				_ = cork.release()
			}
		}
	}
}

// writeBatch bounds the publishes written under one cork.
const writeBatch = 64

func (s *pubChannel) send(ch *amqp091.Channel, prefix string, req *publishRequest) {
	// Only this goroutine publishes on ch, so the next sequence number is
	// the delivery tag the confirm will carry.
	tag := ch.GetNextPublishSeqNo()
	s.pmu.Lock()
	s.pending[tag] = req
	s.pmu.Unlock()
	s.inflight.Add(1)

	pub := amqp091.Publishing{
		Headers:      req.msg.Headers,
		DeliveryMode: amqp091.Persistent,
		MessageId:    prefix + strconv.FormatUint(tag, 10),
		Body:         req.msg.Body,
	}
	if req.msg.Expiration > 0 {
		pub.Expiration = strconv.FormatInt(req.msg.Expiration.Milliseconds(), 10)
	}
	if err := ch.Publish(req.msg.Exchange, req.msg.RoutingKey, true, false, pub); err != nil {
		s.pmu.Lock()
		delete(s.pending, tag)
		s.pmu.Unlock()
		s.inflight.Add(-1)
		req.done <- fmt.Errorf("%w: %v", ErrNotConnected, err)
	}
}

func (s *pubChannel) markReturned(messageID, prefix string) {
	rest, ok := strings.CutPrefix(messageID, prefix)
	if !ok {
		return
	}
	tag, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return
	}
	s.pmu.Lock()
	if req := s.pending[tag]; req != nil {
		req.returned = true
	}
	s.pmu.Unlock()
}

func (s *pubChannel) resolve(c amqp091.Confirmation) {
	s.pmu.Lock()
	req := s.pending[c.DeliveryTag]
	delete(s.pending, c.DeliveryTag)
	s.pmu.Unlock()
	if req == nil {
		return
	}
	s.inflight.Add(-1)
	switch {
	case !c.Ack:
		req.done <- ErrNacked
	case req.returned:
		req.done <- ErrUnroutable
	default:
		req.done <- nil
	}
}

func (s *pubChannel) failPending(err error) {
	s.pmu.Lock()
	pending := s.pending
	s.pending = make(map[uint64]*publishRequest)
	s.pmu.Unlock()
	for _, req := range pending {
		s.inflight.Add(-1)
		req.done <- err
	}
}

// failQueued answers publishes that never reached a channel.
func (s *pubChannel) failQueued(err error) {
	for {
		select {
		case req := <-s.reqs:
			req.done <- err
		default:
			return
		}
	}
}
