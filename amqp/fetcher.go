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

// A fetcher serves one queue's gets and waits (kestrel's /t=).
//
// A get reserves a message with basic.get: it leaves the queue only when a
// client asks. On a busy classic queue that this gateway knows the type of
// (it declared it), a consumer fetches ahead instead, which saves the gets
// a round trip each; waits use the consumer too, and gets and waits take
// its deliveries in one line, oldest first (see lineGet). Quorum queues
// and queues of unknown type are never fetched ahead: before RabbitMQ 4.3
// every message given back counts toward a quorum queue's delivery limit,
// so a message must never be taken that no client asked for. Waits on
// them poll with basic.get while a client waits.
//
// The consumer's states, one per fetcher, all changed under mu:
//
//	         hot gets or a waiter, no basic.get in flight
//	┌──────┐ ───────────────────────────────────────────► ┌──────────┐
//	│ idle │                                              │ starting │
//	└──────┘ ◄─────────────────── consume failed ──────── └──────────┘
//	   ▲                                                      │ consume-ok
//	   │ cancel-ok and the last                               ▼
//	   │ deliveries taken in         no demand, clogged,  ┌─────────┐
//	┌──────────┐ ◄───────────────── or a give-back ────── │ flowing │
//	│ stopping │                                          └─────────┘
//	└──────────┘
//
// Invariants, which keep the order of the queue for a client that gets
// one message after the other, give-backs included:
//   - basic.get runs only in idle, with no give-back in progress; a
//     consumer starts only when no basic.get is in flight. The two
//     streams of messages never overlap, so a later basic.get never
//     overtakes a delivery on its way to the consumer.
//   - Prefetched deliveries that nobody claimed (buf) are older than
//     anything either stream brings next; gets and waiters take them first.
//   - A give-back (a reservation requeued, prefetched deliveries returned)
//     stops the consumer first, waits for the basic.gets in flight, puts
//     everything back at once and ends with a barrier round trip; then a
//     basic.get comes before any new consumer (fence): the next get finds
//     the message back at its place (the head, for the message a client
//     just gave back).
//   - A basic.get that the broker answers only after the RPC timeout
//     (stuck) keeps every other basic.get and consumer of the queue from
//     starting until it ends, for one more RPC timeout at most; what it
//     took goes first in buf, or back behind a give-back that began
//     meanwhile (see basicGet). A give-back does not wait for it. Past
//     that second timeout it is written off: the queue's gets (and a
//     consumer) go on, what it takes at last goes back, and the order
//     of the queue is not kept in that fault.
//   - Deliveries in buf belong to the pump, which gives them back before it
//     exits; those of a channel that closed are dropped and uncounted (the
//     broker requeued them). Nothing is stranded, and held counts exactly
//     the deliveries that are neither settled nor void.
type fetcher struct {
	c     *Client
	queue string

	// lastUse (unix nanos) is when a get, a wait or a declaration last
	// asked for the fetcher; held counts its queue's deliveries not yet
	// settled. The janitor releases a fetcher idle on both counts.
	lastUse atomic.Int64
	held    atomic.Int64

	mu       sync.Mutex
	released bool // guarded by mu: no longer in the client's map
	state    fetchState
	prefetch bool // the queue is known to be classic: it may be fetched ahead
	cons     *consumer
	rewinds  int // give-backs in progress: no basic.get or consumer starts
	gets     int // basic.gets in flight
	// stuck: basic.gets in flight (counted in gets too) that the broker
	// did not answer in time and that are not written off yet; no other
	// basic.get starts (see basicGet).
	// waitingAside: gets waiting, outside the line, for a stuck get or a
	// give-back to end; what a stuck get brings late is for them, and the
	// pump does not give it back meanwhile.
	stuck, waitingAside int
	// tickets numbers basic.gets as they start; givebacks counts the
	// give-backs begun (requeue). See basicGet.
	tickets, givebacks uint64
	// fence: messages went back to the queue, and no basic.get has been
	// answered since. RabbitMQ's classic queue process serves a
	// basic.consume before casts waiting in its mailbox (a consume is
	// prioritised while the queue has messages), such as the requeue of
	// a give-back: a consumer started now could be handed newer messages
	// first. A basic.get is served in mailbox order: once one is answered,
	// the requeue is done, and a consumer may start.
	fence    bool
	pumping  bool
	buf      []buffered // unclaimed prefetched deliveries, oldest first
	waiters  []*waiter  // oldest first
	lastGet  time.Time
	hotUntil time.Time // gets keep the consumer wanted until then
	// startAfter delays the next consumer start after one failed.
	startAfter time.Time
	// noConsumerUntil: the connection had no room for another consumer;
	// until then the queue is served as one not fetched ahead.
	noConsumerUntil time.Time
	// changed is closed (and dropped) whenever a waiting get may proceed;
	// nil while nobody waits (see changedLocked).
	changed chan struct{}
	// wake pokes the pump (buffered 1).
	wake chan struct{}
	// asking is the ready count in flight for gets in line (see
	// askReady); nil when none is.
	asking *readyAsk
	// handed counts deliveries handed to the line: whether it moves.
	handed uint64
	// polling: the pump's basic.get for the line is under way; polls
	// counts them as they start (see inLine).
	polling bool
	polls   uint64
}

// fetchState is the state of a fetcher's consumer; see fetcher.
type fetchState uint8

const (
	stateIdle fetchState = iota
	stateStarting
	stateFlowing
	stateStopping
)

func (s fetchState) String() string {
	return [...]string{"idle", "starting", "flowing", "stopping"}[s]
}

const (
	// hotWindow: a get within this of the previous one makes the queue
	// hot: the consumer is wanted.
	hotWindow = 200 * time.Millisecond
	// idleAfter: without gets or waiters for this long, the consumer is
	// cancelled and what it fetched unclaimed goes back, so nothing is
	// held for a second.
	idleAfter = 500 * time.Millisecond
	// flowWait: a get in line gives up when the line has not moved for
	// this long (see lineGet).
	flowWait = 20 * time.Millisecond
	// lineMax: a get waits in line this long at most, then misses: well
	// within memcache clients' read timeouts (gomemcache's default is
	// 500 ms, dalli's and PHP's 1 s).
	lineMax = 250 * time.Millisecond
	// missGrace: a get in line whose buffer is empty waits this
	// long for a delivery on its way, then asks the broker whether
	// anything is ready: if not, it is a miss at once.
	missGrace = 2 * time.Millisecond
	// pumpTick: how often the pump looks at its consumer.
	pumpTick = 100 * time.Millisecond
	// Waits on a queue that is not fetched ahead poll with basic.get,
	// from pollMin up to pollMax apart while the queue stays empty. A set
	// through this gateway to the queue polls at once.
	pollMin = 5 * time.Millisecond
	pollMax = 100 * time.Millisecond
	// startRetry spaces consumer starts after one failed.
	startRetry = 250 * time.Millisecond
	// noConsumerFor: a queue whose connection had no room for its consumer
	// is served without one for this long.
	noConsumerFor = 5 * time.Second
	// defaultPrefetch bounds what a wait consumer holds unclaimed.
	defaultPrefetch = 8
	// defaultHotPrefetch is how far a consumer that serves gets of a busy
	// classic queue fetches ahead: its window is this plus what clients
	// hold of the queue when it starts (they count against the window),
	// at most maxWindow. It is replaced by a new consumer when fewer than
	// minRoom (or half its window) are left for fetching ahead.
	defaultHotPrefetch = 128
	maxWindow          = 4096
	minRoom            = 32
)

// ErrQueueNotFound: the queue does not exist (any more); the broker closed
// the channel that asked.
var ErrQueueNotFound = errors.New("amqp: queue not found")

type buffered struct {
	d  *Delivery
	at time.Time
	// late: the ticket of the stuck basic.get that fetched d (see
	// basicGet); 0 for any other delivery.
	late uint64
}

// consumer is the fetcher's consumer subscription.
type consumer struct {
	qc         *queueChannel
	tag        string
	window     int
	deliveries <-chan amqp091.Delivery
}

// waiter is a wait (or a get of a flowing queue) for the next delivery.
type waiter struct {
	got chan waitResult // buffered 1; written once
}

type waitResult struct {
	d   *Delivery
	err error
}

func (c *Client) fetcher(queue string) *fetcher {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	f := c.fetchers[queue]
	if f == nil {
		f = &fetcher{c: c, queue: queue, wake: make(chan struct{}, 1)}
		c.fetchers[queue] = f
		c.fetchersPeak = max(c.fetchersPeak, len(c.fetchers))
	}
	f.lastUse.Store(time.Now().UnixNano())
	return f
}

// mayConsumeLocked reports whether the queue may have a consumer now: it
// is known to be classic, its connection had room for one when it last
// tried, and no start failed within startRetry. Meanwhile gets use
// basic.get: waiting in line for a consumer that cannot start yet, a get
// right after the broker came back missed the messages it held.
func (f *fetcher) mayConsumeLocked(now time.Time) bool {
	return f.prefetch && !now.Before(f.noConsumerUntil) && !now.Before(f.startAfter)
}

// setPrefetch says whether the queue may be fetched ahead: only when it is
// known to be classic.
func (f *fetcher) setPrefetch(ok bool) {
	f.mu.Lock()
	f.prefetch = ok
	f.mu.Unlock()
}

// notifyLocked wakes the gets waiting for a change.
func (f *fetcher) notifyLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// changedLocked is the channel that the next change closes. It is made
// only when someone waits: an idle queue's fetcher keeps none.
func (f *fetcher) changedLocked() <-chan struct{} {
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	return f.changed
}

// poke wakes the pump, if it runs.
func (f *fetcher) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// ensurePumpLocked starts the pump unless it runs.
func (f *fetcher) ensurePumpLocked() {
	if f.pumping {
		f.poke()
		return
	}
	f.pumping = true
	if !f.c.goFetch(f.pump) {
		f.pumping = false
	}
}

// popLocked takes the oldest live unclaimed delivery.
func (f *fetcher) popLocked() *Delivery {
	for len(f.buf) > 0 {
		b := f.buf[0]
		f.buf[0] = buffered{}
		f.buf = f.buf[1:]
		if !b.d.Stale() {
			return b.d
		}
		b.d.Forget() // its channel closed: the broker has it back
	}
	return nil
}

// get fetches one message, nil when there is none. See fetcher for which
// way.
func (f *fetcher) get(ctx context.Context) (*Delivery, error) {
	start := time.Now()
	f.mu.Lock()
	if f.released {
		f.mu.Unlock()
		return f.c.fetcher(f.queue).get(ctx)
	}
	hot := start.Sub(f.lastGet) < hotWindow
	f.lastGet = start
	if hot && f.mayConsumeLocked(start) {
		f.hotUntil = start.Add(idleAfter)
	}
	seen := f.state
	for {
		if d := f.popLocked(); d != nil {
			f.mu.Unlock()
			return d, nil
		}
		now := time.Now()
		if f.state != seen {
			// The waits below count from when the consumer got where
			// it is.
			seen, start = f.state, now
		}
		switch {
		case f.stuck > 0:
			// The broker has not answered an earlier get: this one
			// waits for it below, and takes what it brings.
		case f.state == stateIdle && f.rewinds == 0 && (!f.mayConsumeLocked(now) || f.fence || now.After(f.hotUntil)):
			t := f.startGetLocked()
			f.mu.Unlock()
			d, err := f.basicGet(t)
			f.mu.Lock()
			f.endGetLocked(t, err)
			if f.gets == 0 {
				f.notifyLocked()
				if f.pumping {
					f.poke()
				}
			}
			f.mu.Unlock()
			return d, err
		case f.state == stateIdle && f.rewinds == 0:
			// Hot: the consumer is wanted; wait for it in line.
			f.ensurePumpLocked()
			return f.lineGet(ctx)
		case f.rewinds == 0:
			// The consumer flows, or starts or stops (and is wanted
			// again, by this get if nobody else).
			return f.lineGet(ctx)
		}
		// A stuck get or a give-back runs: an RPC timeout bounds the
		// wait for it.
		until := start.Add(f.c.opts.RPCTimeout)
		if !now.Before(until) {
			stuck := f.stuck > 0
			f.mu.Unlock()
			if stuck {
				return nil, fmt.Errorf("%w: get from queue %q: an earlier get is not answered yet", ErrBrokerTimeout, f.queue)
			}
			return nil, nil
		}
		changed := f.changedLocked()
		f.waitingAside++
		f.mu.Unlock()
		woke := sleepUntilChange(ctx, changed, until.Sub(now))
		f.mu.Lock()
		f.waitingAside--
		if !woke {
			if f.pumping {
				f.poke() // what came into buf for it may go back now
			}
			f.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

// lineGet serves a get of a queue whose consumer flows, or starts or
// stops on the way to flowing again: the get waits in line (the oldest get
// or wait is served first) for the consumer's next delivery. Called with
// mu held; returns with mu released.
//
// A get misses when the broker says no message is ready and the line has
// stopped moving: nothing was handed to anyone in it for missGrace if
// nothing was since w joined (an idle queue: a miss in milliseconds), else
// for flowWait. After the answer, what the broker pushed before it has
// reached the library; while the line moves, some of that may be for this
// get, and on a busy machine the pump may pause for milliseconds between
// two hand-outs. While messages are ready, a get keeps its place and asks
// again whenever the line has not moved for flowWait. It waits lineMax at
// most: the consumer may bring nothing (clients hold its window, the
// broker serves another consumer).
//
// At 1,000 workers polling one queue, a get that gave up after flowWait
// asked again from the end of the line: thousands of false misses, shares
// as uneven as the order of retries, and a p99 3.5 times raw AMQP's. A
// stall of the whole line (a consumer restarting, a pause of the broker)
// ended every get in it at once. And a get at the end of a long line
// that missed as soon as none was ready missed the messages already
// pushed to the consumer for those ahead of it and for itself.
func (f *fetcher) lineGet(ctx context.Context) (*Delivery, error) {
	w := &waiter{got: make(chan waitResult, 1)}
	f.waiters = append(f.waiters, w)
	if f.state == stateFlowing && !f.cons.hasRoom(f) {
		f.poke() // clogged: the pump starts a fresh consumer
	}
	handed := f.handed
	joined := handed // the line's hand-outs when w joined it
	f.mu.Unlock()
	if d, served, err := f.served(ctx, w, missGrace); served {
		return d, err
	}
	deadline := time.Now().Add(lineMax)
	for {
		// The answer may take long when hundreds of gets wait (one
		// round trip after another on the queue's get channel): a
		// delivery handed to w meanwhile is returned at once rather
		// than after it.
		a := f.askReady()
		select {
		case r := <-w.got:
			return r.d, r.err
		case <-a.done:
		case <-ctx.Done():
			f.walkAway(w)
			return nil, ctx.Err()
		}
		quiet := flowWait // how long the line may stand still
		switch {
		case errors.Is(a.err, ErrQueueNotFound):
			// A delivery handed to w as the queue went is the client's
			// all the same: the broker delivered it before the delete.
			if got := f.leaveLine(w); got != nil {
				return got, nil
			}
			return nil, a.err
		case a.err == nil && a.n == 0 && f.handedOut() == joined:
			// An idle queue ran dry: a miss in a few milliseconds.
			quiet = missGrace
		}
		for {
			// missGrace at least, even past the deadline: the answer may
			// have taken long (a consumer starting), and "none ready"
			// holds only once what it brought in reached the line.
			d, served, err := f.served(ctx, w, max(missGrace, min(quiet, time.Until(deadline))))
			if served {
				return d, err
			}
			if !time.Now().Before(deadline) {
				return f.leaveLine(w), nil
			}
			f.mu.Lock()
			moved := f.handed != handed
			handed = f.handed
			f.mu.Unlock()
			if !moved {
				break
			}
		}
		if a.err == nil && a.n == 0 && f.gaveBackSince(a) && time.Now().Before(deadline) {
			// None was ready, but a give-back began since: what it
			// puts back (prefetched deliveries the line could not be
			// handed while it ran) was in the queue all along.
			continue
		}
		if a.err != nil || a.n == 0 {
			// None ready (or no answer), and the line stands still.
			return f.leaveLine(w), nil
		}
		// Ready, but the line stands still: ask again, the last ones may
		// have gone to those ahead.
	}
}

// gaveBackSince reports whether a give-back began after a's answer.
func (f *fetcher) gaveBackSince(a *readyAsk) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.givebacks != a.givebacks
}

// handedOut is how many deliveries the line has been handed so far.
func (f *fetcher) handedOut() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.handed
}

// readyAsk is one question to the broker, shared by the gets of a flowing
// queue that ask it at the same time: how many messages are ready. When
// none are, it has also made a round trip on the consumer's channel, so
// that what the broker pushed before it answered has reached the library.
type readyAsk struct {
	done chan struct{} // closed when n, givebacks and err are set
	n    int
	// givebacks: the fetcher's count of give-backs begun when the answer
	// was taken; one begun since may put back what the answer missed.
	givebacks uint64
	err       error
}

// askReady returns the ready count in flight, or starts one. Gets that
// find one in flight take its answer, which may be older than they are by
// less than a round trip: at worst a get misses a message published during
// that round trip, as it would had it come a moment earlier. One question
// at a time instead of one per get: at 1,000 clients, a passive
// declaration per get queued on the queue's get channel and made gets that
// had been handed a message wait seconds for their turn.
func (f *fetcher) askReady() *readyAsk {
	f.mu.Lock()
	if a := f.asking; a != nil {
		f.mu.Unlock()
		return a
	}
	a := &readyAsk{done: make(chan struct{})}
	f.asking = a
	f.mu.Unlock()
	finish := func(n int, givebacks uint64, err error) {
		f.mu.Lock()
		f.asking = nil
		f.mu.Unlock()
		a.n, a.givebacks, a.err = n, givebacks, err
		close(a.done)
	}
	if !f.c.goFetch(func() { finish(f.countReady()) }) {
		finish(0, 0, ErrClosed)
	}
	return a
}

// countReady asks how many messages are ready. "None" is answered only
// once every message the broker pushed to the queue's consumer before it
// said so is with the library, on its way to the line: the consumer is
// then neither starting nor stopping, and a round trip on its channel
// followed the count. A consumer that was starting when the count was
// asked may have been pushed the last ready message already: a get that
// missed it (the socket fuzz test's well-behaved client did) broke the
// promise that a queue holding a message serves it. A give-back that
// began meanwhile puts messages back: then the question is asked again.
// An RPC timeout bounds the waits for the consumer and the give-backs.
// It returns the count of give-backs begun when it took its answer.
func (f *fetcher) countReady() (int, uint64, error) {
	deadline := time.Now().Add(f.c.opts.RPCTimeout)
	givebacks := f.settle(deadline)
	for {
		n, err := f.readyCount()
		if err != nil || n > 0 {
			return n, givebacks, err
		}
		now := f.settle(deadline)
		if now != givebacks && time.Now().Before(deadline) {
			givebacks = now
			continue
		}
		f.mu.Lock()
		cs := f.cons
		if f.state != stateFlowing {
			cs = nil
		}
		f.mu.Unlock()
		if cs != nil {
			f.consumerBarrier(cs)
		}
		return 0, givebacks, nil
	}
}

// settle waits, until deadline at most, until no consumer of the queue is
// starting or stopping and no give-back runs, and returns how many
// give-backs have begun so far.
func (f *fetcher) settle(deadline time.Time) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.state == stateStarting || f.state == stateStopping || f.rewinds > 0 {
		changed := f.changedLocked()
		f.mu.Unlock()
		woke := sleepUntilChange(f.c.runCtx, changed, time.Until(deadline))
		f.mu.Lock()
		if !woke || !time.Now().Before(deadline) {
			break
		}
	}
	return f.givebacks
}

// inLine waits up to d for w to be served, then leaves the line. A poll
// under way (a basic.get for the line, see poll) is waited for past d:
// what it takes goes to the oldest in line, and a wait that left before it
// was answered made it go back to the queue, which a quorum queue counts
// as a delivery no client received. The poll ends within an RPC timeout.
func (f *fetcher) inLine(ctx context.Context, w *waiter, d time.Duration) (*Delivery, error) {
	if got, served, err := f.served(ctx, w, d); served {
		return got, err
	}
	f.mu.Lock()
	poll := f.polls // the poll under way now, if any; not the ones after it
	f.mu.Unlock()
	for {
		f.mu.Lock()
		if !f.polling || f.polls != poll {
			f.mu.Unlock()
			return f.leaveLine(w), nil
		}
		changed := f.changedLocked()
		f.mu.Unlock()
		select {
		case r := <-w.got:
			return r.d, r.err
		case <-changed:
		case <-ctx.Done():
			f.walkAway(w)
			return nil, ctx.Err()
		}
	}
}

// served waits up to d for w to be handed something; served is false when
// nothing came. When ctx ends, w leaves the line, and what it was handed
// meanwhile goes to the next in line.
func (f *fetcher) served(ctx context.Context, w *waiter, d time.Duration) (*Delivery, bool, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-w.got:
		return r.d, true, r.err
	case <-t.C:
		return nil, false, nil
	case <-ctx.Done():
		f.walkAway(w)
		return nil, true, ctx.Err()
	}
}

// leaveLine takes w out of line and returns what it was handed as it left.
func (f *fetcher) leaveLine(w *waiter) *Delivery {
	f.mu.Lock()
	f.removeWaiterLocked(w)
	f.mu.Unlock()
	select {
	case r := <-w.got:
		return r.d
	default:
		return nil
	}
}

// walkAway takes w out of line for a client that went away: what it was
// handed as it left goes to the next in line.
func (f *fetcher) walkAway(w *waiter) {
	if got := f.leaveLine(w); got != nil {
		f.unclaimed(got)
	}
}

// sleepUntilChange waits for changed to close or d to pass; false when ctx
// ended.
func sleepUntilChange(ctx context.Context, changed <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

// consumerBarrier is a round trip on the consumer's channel: deliveries
// the broker pushed before it are then with the library (a basic.qos that
// repeats the window changes nothing).
func (f *fetcher) consumerBarrier(cs *consumer) {
	if !cs.qc.lockOpen(f.c) {
		return
	}
	_ = cs.qc.rpc(f.c, func() error { return cs.qc.ch.Qos(cs.window, 0, false) }, nil)
}

// hasRoom reports whether the broker may still push deliveries to the
// consumer: reservations that clients hold count against its window.
func (cs *consumer) hasRoom(f *fetcher) bool {
	return cs.window-cs.heldLocked(f) >= max(1, min(cs.window/2, minRoom))
}

// heldLocked counts the consumer's deliveries that clients hold. (Acks on
// their way to the broker count against the window too, but only for a
// moment: a consumer is not replaced for them.)
func (cs *consumer) heldLocked(f *fetcher) int {
	held := int(cs.qc.outstanding.Load() - cs.qc.acking.Load())
	for _, b := range f.buf {
		if b.d.qc == cs.qc {
			held--
		}
	}
	return held
}

// wait returns the next message within timeout, nil when none came. It
// ends early, with ctx's error, when ctx ends (the client went away); a
// message handed to it just then goes to the next in line.
func (f *fetcher) wait(ctx context.Context, timeout time.Duration) (*Delivery, error) {
	f.mu.Lock()
	if f.released {
		f.mu.Unlock()
		return f.c.fetcher(f.queue).wait(ctx, timeout)
	}
	if d := f.popLocked(); d != nil {
		f.mu.Unlock()
		return d, nil
	}
	w := &waiter{got: make(chan waitResult, 1)}
	f.waiters = append(f.waiters, w)
	f.ensurePumpLocked()
	f.mu.Unlock()
	return f.inLine(ctx, w, timeout)
}

func (f *fetcher) removeWaiterLocked(w *waiter) {
	for i, x := range f.waiters {
		if x == w {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			return
		}
	}
}

// unclaimed takes back a delivery that a waiter left behind: the next
// waiter gets it, else it waits in the buffer (still the oldest), else,
// with no consumer to keep it for, it goes back to the queue.
func (f *fetcher) unclaimed(d *Delivery) {
	f.mu.Lock()
	if len(f.waiters) > 0 {
		f.handLocked(d)
		f.mu.Unlock()
		return
	}
	if f.pumping && f.mayConsumeLocked(time.Now()) {
		f.buf = append([]buffered{{d: d, at: time.Now()}}, f.buf...)
		f.notifyLocked()
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	f.requeue(nil, []*Delivery{d})
}

// handLocked gives d to the oldest waiter. It is done under mu, so that a
// waiter that gives up (under mu too) and finds itself no longer in line
// finds d in its channel.
func (f *fetcher) handLocked(d *Delivery) {
	w := f.waiters[0]
	f.waiters = f.waiters[1:]
	f.handed++
	w.got <- waitResult{d: d}
}

// dispatchLocked hands unclaimed deliveries to waiters, oldest first.
func (f *fetcher) dispatchLocked() {
	for f.rewinds == 0 && len(f.waiters) > 0 {
		d := f.popLocked()
		if d == nil {
			return
		}
		f.handLocked(d)
	}
}

// failWaitersLocked ends every wait with err.
func (f *fetcher) failWaitersLocked(err error) {
	for _, w := range f.waiters {
		w.got <- waitResult{err: err}
	}
	f.waiters = nil
}

// requeue puts deliveries back in the queue: rejects (basic.reject with
// requeue: a client had them, and a quorum queue counts that) and unclaimed
// ones (basic.nack with requeue: nobody claimed them). Every unclaimed
// prefetched delivery goes back with them. It returns when the broker has
// them back (see fetcher for the order this keeps).
func (f *fetcher) requeue(rejects, unclaimed []*Delivery) {
	f.mu.Lock()
	f.beginRequeueLocked()
	f.requeueLocked(rejects, unclaimed)
}

// beginRequeueLocked counts a give-back as begun: from now on no basic.get
// or consumer starts until it is done.
func (f *fetcher) beginRequeueLocked() {
	f.rewinds++
	f.givebacks++
}

// requeueLocked is requeue once begun (beginRequeueLocked); it releases mu.
func (f *fetcher) requeueLocked(rejects, unclaimed []*Delivery) {
	// The consumer's stop and the gets in flight end within an RPC
	// timeout or two, unless the broker froze; then the give-back goes
	// ahead without them (its order is lost in that fault, nothing else).
	// A get the broker did not answer in time (stuck) is not waited for:
	// what it brings late goes back after this give-back (see basicGet).
	deadline := time.Now().Add(2 * f.c.opts.RPCTimeout)
	for (f.state != stateIdle || f.gets > f.stuck) && time.Now().Before(deadline) {
		if f.state != stateIdle {
			f.poke() // the pump stops its consumer
		}
		changed := f.changedLocked()
		f.mu.Unlock()
		sleepUntilChange(context.Background(), changed, time.Until(deadline))
		f.mu.Lock()
	}
	for _, b := range f.buf {
		unclaimed = append(unclaimed, b.d)
	}
	clear(f.buf)
	f.buf = f.buf[:0]
	waited := !(f.state != stateIdle || f.gets > f.stuck)
	f.mu.Unlock()
	f.c.opts.Logger.Debug("requeue", "queue", f.queue, "rejects", len(rejects), "unclaimed", len(unclaimed), "in order", waited)

	// The channels stay open until their barrier is done, even a retired
	// consumer channel whose last delivery goes back now.
	var touched []*queueChannel
	for _, d := range append(rejects[:len(rejects):len(rejects)], unclaimed...) {
		if !containsChannel(touched, d.qc) {
			d.qc.outstanding.Add(1)
			touched = append(touched, d.qc)
		}
	}
	for _, d := range rejects {
		_ = d.sendSettle(settleReject)
	}
	for _, d := range unclaimed {
		f.c.noteReturnedUnclaimed(d.MessageID)
		_ = d.sendSettle(settleNackUnclaimed)
	}
	for _, qc := range touched {
		f.barrier(qc)
		qc.settled(f.c)
	}

	f.mu.Lock()
	f.rewinds--
	if len(touched) > 0 {
		f.fence = true
	}
	f.notifyLocked()
	if f.pumping {
		f.poke()
	}
	f.mu.Unlock()
}

func containsChannel(qcs []*queueChannel, qc *queueChannel) bool {
	for _, x := range qcs {
		if x == qc {
			return true
		}
	}
	return false
}

// pumpAction is what the pump does next; decideLocked chooses it.
type pumpAction uint8

const (
	actWait         pumpAction = iota // for deliveries, a poke or the tick
	actStart                          // subscribe a consumer
	actStop                           // cancel the consumer
	actPoll                           // basic.get for a waiter
	actReturnBuffer                   // give back what nobody claimed
	actFence                          // a basic.get before the next consumer
	actExit
)

// decideLocked is the pump's one place of decision: the transitions of the
// diagram in fetcher's comment that the pump makes, from what is wanted now.
func (f *fetcher) decideLocked(now time.Time) pumpAction {
	wanted := len(f.waiters) > 0 || now.Before(f.hotUntil)
	consume := f.mayConsumeLocked(now)
	switch f.state {
	case stateIdle:
		switch {
		case f.rewinds > 0:
			return actWait // the give-back pokes us when done
		case wanted && consume && f.fence && len(f.waiters) > 0 && f.gets == 0:
			return actFence
		case wanted && consume && f.fence:
			return actWait // the next get's basic.get lifts the fence
		case wanted && consume && f.gets == 0:
			f.state = stateStarting
			return actStart
		case wanted && consume:
			return actWait // the gets in flight poke us when done
		case len(f.waiters) > 0:
			return actPoll
		case len(f.buf) > 0 && f.waitingAside > 0:
			return actWait // a get waits for what a stuck get brought
		case len(f.buf) > 0:
			return actReturnBuffer
		}
		f.pumping = false
		return actExit
	case stateFlowing:
		if f.rewinds > 0 || !wanted || !f.cons.hasRoom(f) {
			f.state = stateStopping
			return actStop
		}
	}
	return actWait
}

// pump runs the queue's consumer, or polls for its waiters, and settles
// what it fetched unclaimed, until nothing is wanted and nothing is held.
func (f *fetcher) pump() {
	tick := time.NewTicker(pumpTick)
	defer tick.Stop()
	poll := pollMin
	for {
		f.mu.Lock()
		act := f.decideLocked(time.Now())
		var deliveries <-chan amqp091.Delivery
		if f.cons != nil {
			deliveries = f.cons.deliveries
		}
		f.mu.Unlock()

		var pollTimer <-chan time.Time
		switch act {
		case actExit:
			return
		case actStart:
			f.startConsumer()
			continue
		case actStop:
			f.stopConsumer()
			continue
		case actReturnBuffer:
			f.requeue(nil, nil)
			continue
		case actFence:
			f.fenceGet()
			continue
		case actPoll:
			if f.poll() {
				poll = pollMin
				continue
			}
			poll = min(2*poll, pollMax)
			pollTimer = time.After(poll)
		}
		select {
		case m, ok := <-deliveries:
			if !ok {
				f.consumerEnded()
				continue
			}
			f.deliver(m)
		case <-pollTimer:
		case <-f.wake:
			poll = pollMin
		case <-tick.C:
		case <-f.c.runCtx.Done():
			// Closing the connections requeues whatever is unacked.
			f.mu.Lock()
			f.failWaitersLocked(ErrClosed)
			f.cons, f.state, f.pumping = nil, stateIdle, false
			f.dropBufLocked()
			f.notifyLocked()
			f.mu.Unlock()
			return
		}
	}
}

// deliver takes one of the consumer's deliveries.
func (f *fetcher) deliver(m amqp091.Delivery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.cons.qc.track(f, &m)
	f.buf = append(f.buf, buffered{d: d, at: time.Now()})
	f.dispatchLocked()
	f.notifyLocked()
}

// startConsumer subscribes a consumer on a channel of its own, in state
// starting.
func (f *fetcher) startConsumer() {
	f.mu.Lock()
	// The window leaves room for what clients hold now and for the gets
	// and waits in line: with hundreds of workers each holding a message
	// or about to, a fixed window would be full of their reservations,
	// and the consumer would be replaced again and again.
	window := f.c.opts.Prefetch
	if time.Now().Before(f.hotUntil) {
		window = f.c.opts.HotPrefetch
	}
	window = min(window+int(f.held.Load())+len(f.waiters), maxWindow)
	f.mu.Unlock()
	cs, err := f.subscribe(window)
	if f.c.afterSubscribe != nil {
		f.c.afterSubscribe()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notifyLocked()
	if errors.Is(err, errTooManyConsumers) {
		f.state = stateIdle
		f.noConsumerUntil = time.Now().Add(noConsumerFor)
		return
	}
	if err != nil {
		f.state = stateIdle
		f.startAfter = time.Now().Add(startRetry)
		f.c.opts.Logger.Debug("consumer not started", "queue", f.queue, "err", err)
		if errors.Is(err, ErrQueueNotFound) {
			f.c.Forget(f.queue)
		}
		f.failWaitersLocked(err)
		return
	}
	f.cons = cs
	f.state = stateFlowing
}

func (f *fetcher) subscribe(window int) (*consumer, error) {
	pools := f.c.pools(f.queue)
	if len(pools) == 0 {
		return nil, ErrNotConnected
	}
	qc, err := pools[0].openConsumer(f)
	if err != nil {
		return nil, err
	}
	cs := &consumer{qc: qc, tag: f.c.consumerTag(), window: window}
	qc.mu.Lock()
	err = qc.rpc(f.c, func() (err error) {
		if err := qc.ch.Qos(window, 0, false); err != nil {
			return err
		}
		cs.deliveries, err = qc.ch.Consume(f.queue, cs.tag, false, false, false, false, nil)
		return err
	}, func(err error) {
		if err == nil {
			_ = qc.ch.Close()
		}
	})
	if err != nil {
		_ = qc.ch.Close()
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %q", ErrQueueNotFound, f.queue)
		}
		if isAccessRefused(err) {
			return nil, accessRefused(fmt.Sprintf("consume queue %q", f.queue), err)
		}
		return nil, fmt.Errorf("%w: consume queue %q: %w", ErrNotConnected, f.queue, err)
	}
	return cs, nil
}

// stopConsumer cancels the consumer, in state stopping, and takes its last
// deliveries.
func (f *fetcher) stopConsumer() {
	f.mu.Lock()
	cs := f.cons
	f.mu.Unlock()
	cs.qc.mu.Lock()
	if err := cs.qc.rpc(f.c, func() error { return cs.qc.ch.Cancel(cs.tag, false) }, nil); err != nil {
		// A stuck queue answers late, a dead connection never: the
		// cancel goes on and deliveries end either way. The channel is
		// not closed here: clients hold deliveries of it, and acks sent
		// after our channel.close would make the broker close the whole
		// connection.
		f.c.opts.Logger.Debug("consumer cancel slow", "queue", f.queue, "err", err)
	}
	// After cancel-ok the library hands over what was still under way and
	// closes deliveries.
	for m := range cs.deliveries {
		f.deliver(m)
	}
	f.consumerEnded()
}

// consumerEnded moves to idle once the consumer's deliveries are closed:
// cancelled by us, by the broker (the queue was deleted), or with its
// channel.
func (f *fetcher) consumerEnded() {
	f.mu.Lock()
	defer f.mu.Unlock()
	cs := f.cons
	if f.state != stateStopping && !cs.qc.ch.IsClosed() {
		// Cancelled by the broker: the queue is gone. Whatever is
		// declared next under its name has a type to be learnt anew.
		f.c.Forget(f.queue)
		f.prefetch = false
	}
	f.cons = nil
	f.state = stateIdle
	// The channel stays open while clients hold deliveries of it (buffered
	// ones count too); the last settlement closes it.
	cs.qc.retire(f.c)
	f.notifyLocked()
}

// fenceGet is the basic.get that lets a consumer start after a give-back
// (see fetcher.fence). What it fetches is the oldest message: it goes to
// the oldest waiter, or first in the buffer.
func (f *fetcher) fenceGet() {
	f.mu.Lock()
	if f.rewinds > 0 || f.stuck > 0 || f.state != stateIdle || !f.fence {
		f.mu.Unlock()
		return
	}
	t := f.startGetLocked()
	f.mu.Unlock()
	d, err := f.basicGet(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endGetLocked(t, err)
	f.notifyLocked()
	if err != nil {
		f.startAfter = time.Now().Add(startRetry)
		f.failWaitersLocked(err)
		return
	}
	if d == nil {
		return
	}
	f.buf = append([]buffered{{d: d, at: time.Now()}}, f.buf...)
	f.dispatchLocked()
}

// poll serves the oldest waiter of a queue that is not fetched ahead with
// a basic.get; true when it found a message.
func (f *fetcher) poll() bool {
	f.mu.Lock()
	if f.rewinds > 0 || f.stuck > 0 || f.state != stateIdle || len(f.waiters) == 0 {
		f.mu.Unlock()
		return false
	}
	t := f.startGetLocked()
	f.polling = true
	f.polls++
	f.mu.Unlock()
	d, err := f.basicGet(t)
	f.mu.Lock()
	f.endGetLocked(t, err)
	f.polling = false
	f.notifyLocked()
	if err != nil {
		f.failWaitersLocked(err)
		f.mu.Unlock()
		return false
	}
	if d == nil {
		f.mu.Unlock()
		return false
	}
	if len(f.waiters) > 0 {
		f.handLocked(d)
		f.mu.Unlock()
		return true
	}
	f.mu.Unlock()
	f.requeue(nil, []*Delivery{d})
	return true
}

// goFetch starts a goroutine owned by the client; false once Close began.
func (c *Client) goFetch(fn func()) bool {
	c.gmu.Lock()
	defer c.gmu.Unlock()
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

// janitor closes idle get channels and releases the fetchers of queues
// nobody used for a while, until the client closes: thousands of queues
// used once must not cost memory for ever.
func (c *Client) janitor() {
	t := time.NewTicker(channelIdle / 3)
	defer t.Stop()
	for {
		select {
		case <-c.runCtx.Done():
			return
		case now := <-t.C:
			for _, cc := range c.cons {
				cc.pool.closeIdle(now)
			}
			c.releaseIdleFetchers(now)
		}
	}
}

// fetcherIdle: a fetcher unused this long that holds nothing is released.
const fetcherIdle = 2 * time.Minute

func (c *Client) releaseIdleFetchers(now time.Time) {
	var released []*fetcher
	c.fmu.Lock()
	for q, f := range c.fetchers {
		if f.releaseIfIdle(now) {
			delete(c.fetchers, q)
			released = append(released, f)
		}
	}
	c.shrinkFetchersLocked()
	c.fmu.Unlock()
	for _, f := range released {
		c.forgetFetcher(f)
	}
}

// forgetFetcher drops what is known of a released fetcher's queue: what
// is learnt of it (declared, its type) is learnt again on its next use.
func (c *Client) forgetFetcher(f *fetcher) {
	c.declared.Delete(f.queue)
	for _, cc := range c.cons {
		cc.pool.forget(f)
	}
}

// releaseIfIdle marks f released when nothing runs on it, nothing of its
// queue is held or buffered, and nobody used it for fetcherIdle before now
// (a zero now: whenever it was last used). A caller that fetched f just
// before finds it released and asks for a new one.
func (f *fetcher) releaseIfIdle(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != stateIdle || f.pumping || f.rewinds > 0 || f.gets > 0 || len(f.waiters) > 0 ||
		len(f.buf) > 0 || f.held.Load() > 0 || !now.IsZero() && now.Sub(time.Unix(0, f.lastUse.Load())) < fetcherIdle {
		return false
	}
	f.released = true
	return true
}

func (c *Client) consumerTag() string {
	return fmt.Sprintf("%s-%d", c.pub.instance, c.tagSeq.Add(1))
}

// returnedUnclaimed remembers message ids of deliveries returned unclaimed
// (nacked), so that their next delivery is not counted as a redelivery.
// Two generations bound its memory.
type returnedUnclaimed struct {
	mu        sync.Mutex
	cur, prev map[string]struct{}
	rotated   time.Time
}

const returnedUnclaimedGeneration = 10 * time.Second

func (c *Client) noteReturnedUnclaimed(id string) {
	if id == "" {
		return
	}
	g := &c.returned
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil || time.Since(g.rotated) > returnedUnclaimedGeneration {
		g.prev, g.cur, g.rotated = g.cur, make(map[string]struct{}), time.Now()
	}
	g.cur[id] = struct{}{}
}

func (c *Client) wasReturnedUnclaimed(id string) bool {
	if id == "" {
		return false
	}
	g := &c.returned
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
