package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// A fetcher serves one queue's gets and waits on channels of its own. Keeping
// a queue's deliveries on its own channels means a basic.get that fails (the
// broker closes the channel with 404 when an operator deleted the queue)
// only makes that queue's reservations stale, never another queue's.
//
// Gets use basic.get: a message leaves the queue only when a client asked.
// When a classic queue is busy (gets back to back), a consumer prefetches
// for the gets, saving them the broker round trip. Waits (kestrel's /t=)
// use a consumer too, while anybody waits. What a consumer brings beyond
// what gets and waiters claim is held at most prefetch deliveries and for
// less than a second, then given back with basic.nack.
const (
	// maxQueueChannels bounds the concurrent basic.get RPCs per queue.
	maxQueueChannels = 8
	// channelIdle: a get channel with nothing unsettled is closed after
	// this long unused.
	channelIdle = 30 * time.Second
	// giveBackAfter: an unclaimed prefetched delivery older than this goes
	// back; with janitorTick nothing is held a second.
	giveBackAfter = 700 * time.Millisecond
	janitorTick   = 250 * time.Millisecond
	// idleAfter: no wait for this long cancels the consumer.
	idleAfter = time.Second
	// defaultPrefetch bounds what a wait consumer holds unclaimed.
	defaultPrefetch = 8
	// defaultHotPrefetch is the window of a consumer that serves gets of a
	// busy classic queue.
	defaultHotPrefetch = 128
	// hotWindow: a get within this of the previous one makes the queue hot.
	hotWindow = 200 * time.Millisecond
	// flowWait: how long a get of a hot queue waits for the flowing
	// consumer's next delivery before it asks with basic.get.
	flowWait = 20 * time.Millisecond
	// missGrace: how long a get of a hot queue waits for a delivery that
	// may be on its way before it answers a miss.
	missGrace = 5 * time.Millisecond
)

// ErrQueueNotFound: the queue does not exist (any more); the broker closed
// the channel that asked.
var ErrQueueNotFound = errors.New("amqp: queue not found")

type fetcher struct {
	c     *Client
	queue string

	mu       sync.Mutex
	opened   *sync.Cond      // on mu: a channel finished opening
	chans    []*queueChannel // guarded by mu
	opening  int             // guarded by mu: channels being opened
	next     int             // guarded by mu
	running  bool            // guarded by mu: a wait consumer runs
	buf      []buffered      // guarded by mu: unclaimed prefetched deliveries, oldest first
	waiters  []chan *Delivery
	lastWait time.Time
	lastGet  time.Time
	// prefetch: the queue is known to be classic (we declared it), so gets
	// may prefetch. Never for quorum or unknown queues: before RabbitMQ
	// 4.3 every message given back counts toward a quorum delivery limit.
	prefetch bool
	// arrived is closed and replaced whenever a delivery is buffered.
	arrived chan struct{}
	// flowing is the channel of the prefetching consumer while it consumes
	// (nil otherwise), flowingWindow its window: while it holds fewer
	// deliveries than that, the broker sends it more.
	flowing       *queueChannel
	flowingWindow int
	// drained: a basic.get found the queue empty and no delivery came
	// since; gets then ask at once rather than wait for the consumer.
	drained bool
}

type buffered struct {
	d  *Delivery
	at time.Time
}

// queueChannel is one channel of a fetcher. RPCs on it are serialised:
// amqp091-go matches RPC replies to callers by arrival order only.
type queueChannel struct {
	mu          sync.Mutex
	ch          *amqp091.Channel
	acks        *ackWriter   // of the channel's connection
	ledger      *tagLedger   // of the channel's delivery tags
	outstanding atomic.Int64 // deliveries not yet settled
	lastUse     atomic.Int64 // unix nanos
}

func (c *Client) fetcher(queue string) *fetcher {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	f := c.fetchers[queue]
	if f == nil {
		f = &fetcher{c: c, queue: queue, arrived: make(chan struct{})}
		f.opened = sync.NewCond(&f.mu)
		c.fetchers[queue] = f
	}
	return f
}

// get fetches one message: one a consumer prefetched (for busy gets or for
// waiters) if there is one, else by basic.get. nil, nil: the queue is
// empty.
//
// While a prefetching consumer has room in its window and the queue was not
// found empty since its last delivery, the broker is pushing it the queue's
// next messages: a get that finds the buffer empty waits for the next of
// them (flowWait at most) before it asks with basic.get. Asking first puts
// a synchronous call into the queue process that is delivering to the
// consumer: at 16 busy clients such a basic.get took ≈6 ms, and the
// broker's delivery stream pauses now and then for 5-20 ms, which a wait
// rides out and a basic.get does not shorten.
func (f *fetcher) get() (*Delivery, error) {
	f.mu.Lock()
	d := f.popLocked()
	now := time.Now()
	hot := now.Sub(f.lastGet) < hotWindow
	f.lastGet = now
	if d == nil && hot && f.prefetch && !f.running {
		f.startLocked()
	}
	var next chan *Delivery
	if d == nil && f.prefetch && !f.drained && f.flowing != nil &&
		f.flowing.outstanding.Load() < int64(f.flowingWindow) {
		next = f.addWaiterLocked()
	}
	f.mu.Unlock()
	if d != nil {
		return d, nil
	}
	if next != nil {
		if d := f.awaitDelivery(context.Background(), next, flowWait); d != nil {
			return d, nil
		}
	}
	f.mu.Lock()
	consuming := f.running
	arrived := f.arrived
	f.mu.Unlock()
	d, err := f.basicGet()
	if d == nil && err == nil {
		f.mu.Lock()
		f.drained = true
		f.mu.Unlock()
	}
	if d != nil || err != nil || !consuming {
		return d, err
	}
	// The queue looked empty, but a message may be on its way to our
	// consumer (a consumer just started, or a slow delivery): give it a
	// moment rather than answer a miss that is not.
	t := time.NewTimer(missGrace)
	defer t.Stop()
	select {
	case <-arrived:
	case <-t.C:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.popLocked(), nil
}

func (f *fetcher) startLocked() {
	f.running = true
	if !f.c.goFetch(f.consume) {
		f.running = false
	}
}

// basicGet fetches one message with basic.get.
func (f *fetcher) basicGet() (*Delivery, error) {
	qc, err := f.channel()
	if err != nil {
		return nil, err
	}
	defer qc.mu.Unlock()
	qc.lastUse.Store(time.Now().UnixNano())
	msg, ok, err := qc.ch.Get(f.queue, false)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %q", ErrQueueNotFound, f.queue)
		}
		return nil, fmt.Errorf("%w: get from queue %q: %v", ErrNotConnected, f.queue, err)
	}
	if !ok {
		return nil, nil
	}
	return qc.track(newDelivery(f.queue, qc.ch, &msg)), nil
}

func (qc *queueChannel) track(d *Delivery) *Delivery {
	d.acks = qc.acks
	d.ledger = qc.ledger
	qc.outstanding.Add(1)
	d.onSettle = func() { qc.outstanding.Add(-1) }
	return d
}

// channel returns a live channel of the queue, locked for one RPC: an idle
// one, else a new one up to maxQueueChannels, else the next busy one.
func (f *fetcher) channel() (*queueChannel, error) {
	f.mu.Lock()
	live := f.chans[:0]
	for _, qc := range f.chans {
		if !qc.ch.IsClosed() {
			live = append(live, qc)
		}
	}
	clear(f.chans[len(live):])
	f.chans = live
	for _, qc := range f.chans {
		if qc.mu.TryLock() {
			f.mu.Unlock()
			return qc, nil
		}
	}
	if len(f.chans)+f.opening < maxQueueChannels {
		f.opening++
		f.mu.Unlock()
		qc, err := f.open()
		f.mu.Lock()
		f.opening--
		if err == nil {
			qc.mu.Lock()
			f.chans = append(f.chans, qc)
		}
		f.opened.Broadcast()
		f.mu.Unlock()
		return qc, err
	}
	// Channels being opened will do: wait for one.
	for len(f.chans) == 0 && f.opening > 0 {
		f.opened.Wait()
	}
	if len(f.chans) == 0 {
		f.mu.Unlock()
		return nil, ErrNotConnected
	}
	f.next++
	qc := f.chans[f.next%len(f.chans)]
	f.mu.Unlock()
	qc.mu.Lock()
	if qc.ch.IsClosed() {
		qc.mu.Unlock()
		return nil, ErrNotConnected
	}
	return qc, nil
}

// open opens a channel on a consume connection, and a goroutine that tells
// the observer when it dies, so that its reservations are dropped at once.
func (f *fetcher) open() (*queueChannel, error) {
	cc := f.c.pickConsume()
	if cc == nil {
		return nil, ErrNotConnected
	}
	conn := cc.sup.current()
	if conn == nil {
		return nil, ErrNotConnected
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: open channel: %v", ErrNotConnected, err)
	}
	qc := &queueChannel{ch: ch, acks: cc.acks.Load(), ledger: newTagLedger()}
	qc.lastUse.Store(time.Now().UnixNano())
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	f.c.goFetch(func() {
		select {
		case err := <-closed:
			if err != nil {
				f.c.opts.Logger.Debug("queue channel closed", "queue", f.queue, "err", err)
			}
			if qc.outstanding.Load() > 0 {
				f.c.opts.Observer.DeliveriesLost()
			}
		case <-f.c.runCtx.Done():
			// Closing the connection closes the channel.
		}
	})
	return qc, nil
}

func (f *fetcher) popLocked() *Delivery {
	for len(f.buf) > 0 {
		b := f.buf[0]
		f.buf[0] = buffered{}
		f.buf = f.buf[1:]
		if !b.d.Stale() {
			return b.d
		}
	}
	return nil
}

// wait returns the next delivery within timeout, or nil. It does not poll:
// a consumer hands the first arrival to the oldest waiter.
func (f *fetcher) wait(ctx context.Context, timeout time.Duration) *Delivery {
	f.mu.Lock()
	f.lastWait = time.Now()
	if d := f.popLocked(); d != nil {
		f.mu.Unlock()
		return d
	}
	ch := f.addWaiterLocked()
	if !f.running {
		f.startLocked()
	}
	f.mu.Unlock()
	d := f.awaitDelivery(ctx, ch, timeout)
	f.mu.Lock()
	f.lastWait = time.Now()
	f.mu.Unlock()
	return d
}

func (f *fetcher) addWaiterLocked() chan *Delivery {
	ch := make(chan *Delivery, 1)
	f.waiters = append(f.waiters, ch)
	return ch
}

// awaitDelivery waits for the consumer to hand ch a delivery, for timeout
// at most, then leaves the queue of waiters.
func (f *fetcher) awaitDelivery(ctx context.Context, ch chan *Delivery, timeout time.Duration) *Delivery {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case d := <-ch:
		return d
	case <-t.C:
	case <-ctx.Done():
	}
	f.mu.Lock()
	for i, w := range f.waiters {
		if w == ch {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			break
		}
	}
	f.mu.Unlock()
	// A delivery handed over just as we gave up is still ours.
	select {
	case d := <-ch:
		return d
	default:
		return nil
	}
}

// consume runs a consumer for the queue while gets are busy or anybody
// waits, and keeps its channel until its deliveries are settled.
func (f *fetcher) consume() {
	for {
		qc, deliveries, tag, window, err := f.startConsumer()
		if err != nil {
			f.c.opts.Logger.Debug("consumer not started", "queue", f.queue, "err", err)
			f.mu.Lock()
			f.running = false
			f.mu.Unlock()
			return
		}
		if !f.serveConsumer(qc, deliveries, tag, window) {
			return
		}
	}
}

func (f *fetcher) startConsumer() (*queueChannel, <-chan amqp091.Delivery, string, int, error) {
	qc, err := f.open()
	if err != nil {
		return nil, nil, "", 0, err
	}
	f.mu.Lock()
	window := f.c.opts.Prefetch
	if f.prefetch {
		// Claimed deliveries count against the window: leave room for
		// many clients holding one each.
		window = f.c.opts.HotPrefetch
	}
	f.mu.Unlock()
	if err := qc.ch.Qos(window, 0, false); err != nil {
		_ = qc.ch.Close()
		return nil, nil, "", 0, err
	}
	tag := f.c.consumerTag()
	deliveries, err := qc.ch.Consume(f.queue, tag, false, false, false, false, nil)
	if err != nil {
		_ = qc.ch.Close()
		return nil, nil, "", 0, err
	}
	return qc, deliveries, tag, window, nil
}

// serveConsumer hands the consumer's deliveries to waiters and the buffer.
// It returns true when the consumer was retired and a fresh one should
// start: reservations that clients hold count against the window, and a
// window full of them would starve waiters while the queue has messages.
// The retired channel stays open for those reservations, as a get channel.
func (f *fetcher) serveConsumer(qc *queueChannel, deliveries <-chan amqp091.Delivery, tag string, window int) (retired bool) {
	closed := qc.ch.NotifyClose(make(chan *amqp091.Error, 1))
	consuming, retiring := true, false
	f.setFlowing(qc, window)
	defer f.setFlowing(nil, 0)
	tick := time.NewTicker(janitorTick)
	defer tick.Stop()
	for {
		select {
		case m, ok := <-deliveries:
			if !ok {
				// Cancelled by us, or by the broker (queue deleted).
				deliveries, consuming = nil, false
				f.setFlowing(nil, 0)
				if retiring {
					f.mu.Lock()
					f.chans = append(f.chans, qc)
					f.mu.Unlock()
					return true
				}
				continue
			}
			d := qc.track(newDelivery(f.queue, qc.ch, &m))
			d.Redelivered = m.Redelivered && !f.c.wasGivenBack(m.MessageId)
			f.mu.Lock()
			f.drained = false
			if len(f.waiters) > 0 {
				w := f.waiters[0]
				f.waiters = f.waiters[1:]
				w <- d
			} else {
				f.buf = append(f.buf, buffered{d: d, at: time.Now()})
				close(f.arrived)
				f.arrived = make(chan struct{})
			}
			f.mu.Unlock()

		case <-closed:
			f.mu.Lock()
			f.running = false
			f.buf = nil
			f.mu.Unlock()
			return false

		case <-tick.C:
			back, idle, held := f.expire(time.Now(), qc)
			for _, d := range back {
				f.c.noteGivenBack(d.MessageID)
				_ = d.giveBack()
			}
			switch {
			case retiring:
				// Waiting for the cancelled consumer's last deliveries.
			case consuming && held >= window/2:
				consuming, retiring = false, true
				f.setFlowing(nil, 0)
				_ = qc.ch.Cancel(tag, false)
			case idle && consuming:
				consuming = false
				f.setFlowing(nil, 0)
				// Deliveries already under way still arrive; then the
				// library closes deliveries.
				_ = qc.ch.Cancel(tag, false)
			case idle && deliveries == nil && qc.outstanding.Load() == 0:
				f.mu.Lock()
				if len(f.waiters) == 0 {
					f.running = false
					f.mu.Unlock()
					_ = qc.ch.Close()
					return false
				}
				f.mu.Unlock()
			case !idle && deliveries == nil:
				// Wanted again before the channel was released.
				var err error
				tag = f.c.consumerTag()
				if deliveries, err = qc.ch.Consume(f.queue, tag, false, false, false, false, nil); err == nil {
					consuming = true
					f.setFlowing(qc, window)
				} else {
					deliveries = nil
				}
			}

		case <-f.c.runCtx.Done():
			// Closing the connection requeues whatever is unacked.
			return false
		}
	}
}

func (f *fetcher) setFlowing(qc *queueChannel, window int) {
	f.mu.Lock()
	f.flowing, f.flowingWindow = qc, window
	f.mu.Unlock()
}

// expire takes the prefetched deliveries that waited too long, says whether
// nobody has wanted the queue for a while, and how many of qc's deliveries
// clients hold.
func (f *fetcher) expire(now time.Time, qc *queueChannel) (back []*Delivery, idle bool, held int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := f.buf[:0]
	buffered := 0
	for _, b := range f.buf {
		if now.Sub(b.at) > giveBackAfter {
			back = append(back, b.d)
			if b.d.ch == qc.ch {
				buffered++
			}
			continue
		}
		keep = append(keep, b)
		if b.d.ch == qc.ch {
			buffered++
		}
	}
	clear(f.buf[len(keep):])
	f.buf = keep
	// Deliveries of qc that clients hold: outstanding, less the buffered
	// ones (including those about to be given back).
	held = int(qc.outstanding.Load()) - buffered
	idle = len(f.waiters) == 0 && now.Sub(f.lastWait) > idleAfter && now.Sub(f.lastGet) > idleAfter
	return back, idle, held
}

// closeIdle closes get channels unused for channelIdle with nothing
// unsettled on them.
func (f *fetcher) closeIdle(now time.Time) {
	f.mu.Lock()
	var idle []*queueChannel
	keep := f.chans[:0]
	for _, qc := range f.chans {
		if qc.outstanding.Load() == 0 && now.UnixNano()-qc.lastUse.Load() > int64(channelIdle) && qc.mu.TryLock() {
			idle = append(idle, qc)
			continue
		}
		keep = append(keep, qc)
	}
	clear(f.chans[len(keep):])
	f.chans = keep
	f.mu.Unlock()
	for _, qc := range idle {
		_ = qc.ch.Close()
		qc.mu.Unlock()
	}
}

// goFetch starts a goroutine owned by the client; false once Close began.
func (c *Client) goFetch(fn func()) bool {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

// janitor closes idle queue channels until the client closes.
func (c *Client) janitor() {
	t := time.NewTicker(channelIdle / 3)
	defer t.Stop()
	for {
		select {
		case <-c.runCtx.Done():
			return
		case now := <-t.C:
			c.fmu.Lock()
			fs := make([]*fetcher, 0, len(c.fetchers))
			for _, f := range c.fetchers {
				fs = append(fs, f)
			}
			c.fmu.Unlock()
			for _, f := range fs {
				f.closeIdle(now)
			}
		}
	}
}

func (c *Client) consumerTag() string {
	return fmt.Sprintf("%s-%d", c.pub.instance, c.tagSeq.Add(1))
}

// givenBack remembers message ids of deliveries returned unclaimed, so that
// their next delivery is not counted as a redelivery. Two generations bound
// its memory.
type givenBack struct {
	mu        sync.Mutex
	cur, prev map[string]struct{}
	rotated   time.Time
}

const givenBackGeneration = 10 * time.Second

func (c *Client) noteGivenBack(id string) {
	if id == "" {
		return
	}
	g := &c.given
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil || time.Since(g.rotated) > givenBackGeneration {
		g.prev, g.cur, g.rotated = g.cur, make(map[string]struct{}), time.Now()
	}
	g.cur[id] = struct{}{}
}

func (c *Client) wasGivenBack(id string) bool {
	if id == "" {
		return false
	}
	g := &c.given
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.cur[id]; ok {
		delete(g.cur, id)
		return true
	}
	if _, ok := g.prev[id]; ok {
		delete(g.prev, id)
		return true
	}
	return false
}
