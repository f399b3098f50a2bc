package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/internal/shrink"
)

// Client is mcbridge's whole view of the broker: one publishing connection
// with a pool of confirm channels, and ConsumeConnections consuming
// connections whose channels fetch, ack and requeue deliveries.
type Client struct {
	opts Options

	pubSup *supervisor
	pub    *publisher
	cons   []*consumeConn
	next   atomic.Uint32

	// brokerMajor is the major version of the broker last connected to.
	brokerMajor atomic.Int32
	// declared caches queues known to exist, so that a get or set declares
	// at most once. Cleared when the admin connection reconnects.
	declared sync.Map
	admin    adminChannels

	fmu      sync.Mutex
	fetchers map[string]*fetcher // guarded by fmu; one per queue used
	returned returnedUnclaimed
	tagSeq   atomic.Uint64

	// fetchersPeak is the most entries fetchers has had since it was made
	// (see shrinkFetchersLocked). Guarded by fmu.
	fetchersPeak int

	runCtx context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	// gmu orders goFetch's wg.Add before Close's wg.Wait. It is not fmu:
	// goroutines are started under a fetcher's lock, and the janitor
	// takes fetcher locks under fmu.
	gmu sync.Mutex

	// writtenOff counts the stuck gets written off since the start; one
	// log line per 10 s tells of them (see fetcher.writeOff).
	writtenOff  atomic.Int64
	writeOffLog logLimiter

	// afterSubscribe, set by tests before the first get, is called by a
	// queue's pump once its consumer is subscribed, before it flows.
	afterSubscribe func()
}

// New returns a Client; Start connects it.
func New(opts Options) *Client {
	opts.setDefaults()
	var b [6]byte
	_, _ = rand.Read(b[:])
	c := &Client{opts: opts, fetchers: make(map[string]*fetcher)}
	c.runCtx, c.cancel = context.WithCancel(context.Background())
	c.pub = newPublisher(&c.opts, "mcb-"+hex.EncodeToString(b[:]))
	c.pubSup = newSupervisor(RolePublish, 0, &c.opts, c.pub.onUp)
	c.pubSup.wrap = func(nc net.Conn) net.Conn {
		cc := newCorkConn(nc)
		c.pub.cork.Store(cc)
		return cc
	}
	for i := range opts.ConsumeConnections {
		cc := &consumeConn{}
		cc.pool = newChanPool(c, cc)
		cc.sup = newSupervisor(RoleConsume, i, &c.opts, func(ctx context.Context, conn *amqp091.Connection, wg *sync.WaitGroup) error {
			if i == 0 {
				// The first consume connection declares: a memory alarm
				// blocks the publishing one, and declarations must still
				// go through.
				c.brokerMajor.Store(int32(majorVersion(conn)))
				c.declared.Clear()
				if err := declareTopology(conn, c.opts.Topology, majorVersion(conn)); err != nil {
					return err
				}
			}
			acks := newAckWriter(cc.cork.Load(), conn.NotifyClose(make(chan *amqp091.Error, 1)))
			cc.acks.Store(acks)
			wg.Add(1)
			go func() {
				defer wg.Done()
				acks.run()
			}()
			return nil
		})
		cc.sup.beforeClose = func() {
			if acks := cc.acks.Load(); acks != nil {
				acks.drain()
			}
		}
		cc.sup.wrap = func(nc net.Conn) net.Conn {
			cork := newCorkConn(nc)
			cc.cork.Store(cork)
			return cork
		}
		c.cons = append(c.cons, cc)
	}
	return c
}

// Start connects every connection and waits for each one's first attempt. A
// topology the broker refuses is returned (and the client is closed): it
// needs an operator. A broker that cannot be reached is not an error: the
// client keeps trying in the background and reports it through Ready.
func (c *Client) Start(ctx context.Context) error {
	runCtx := c.runCtx
	sups := []*supervisor{c.pubSup}
	for _, cc := range c.cons {
		sups = append(sups, cc.sup)
	}
	c.goFetch(c.janitor)
	for _, s := range sups {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			s.run(runCtx)
		}()
	}
	for _, s := range sups {
		select {
		case err := <-s.first:
			var terr *TopologyError
			if errors.As(err, &terr) {
				c.Close()
				return terr
			}
			if err != nil && c.opts.StrictStart {
				c.Close()
				return err
			}
		case <-ctx.Done():
			c.Close()
			return ctx.Err()
		}
	}
	return nil
}

// Close closes every connection, which requeues every unacked delivery, and
// waits for all of the client's goroutines.
func (c *Client) Close() {
	c.gmu.Lock()
	already := c.closed.Swap(true)
	c.gmu.Unlock()
	if already {
		return
	}
	c.cancel()
	c.wg.Wait()
}

// Ready is nil when the publishing and every consuming connection are up
// with the topology declared, and the broker does not block publishing;
// else it says what is missing.
func (c *Client) Ready() error {
	var errs []error
	if err := c.pubSup.downReason(); err != nil {
		errs = append(errs, err)
	} else if c.pub.blocked.Load() {
		errs = append(errs, fmt.Errorf("%s connection 0: %w (resource alarm)", RolePublish, ErrBlocked))
	}
	for _, cc := range c.cons {
		if err := cc.sup.downReason(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Publish publishes msg persistent and mandatory and waits for its confirm.
// nil: confirmed and routed. ErrUnroutable, ErrNacked: not stored. Anything
// else: the outcome is unknown.
func (c *Client) Publish(ctx context.Context, msg Message) error {
	if c.closed.Load() {
		return ErrClosed
	}
	return c.pub.Publish(ctx, msg)
}

// Get fetches the next message of queue without acking it. It returns nil,
// nil when the queue is empty. The queue must exist (see EnsureQueue): a
// basic.get on a missing queue closes the channel.
func (c *Client) Get(ctx context.Context, queue string) (*Delivery, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	d, err := c.fetcher(queue).get(ctx)
	if errors.Is(err, ErrQueueNotFound) {
		// The queue went away behind our back: forget that it existed.
		c.Forget(queue)
	}
	return d, err
}

// Wait returns the next message of queue within timeout, or nil, nil. It
// ends early with ctx's error when ctx ends: the client went away. The
// queue must exist.
func (c *Client) Wait(ctx context.Context, queue string, timeout time.Duration) (*Delivery, error) {
	if timeout <= 0 {
		return c.Get(ctx, queue)
	}
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	d, err := c.fetcher(queue).wait(ctx, timeout)
	if errors.Is(err, ErrQueueNotFound) {
		c.Forget(queue)
	}
	return d, err
}

// Waiters is how many waits (kestrel's /t=) are waiting on queue now.
func (c *Client) Waiters(queue string) int {
	c.fmu.Lock()
	f := c.fetchers[queue]
	c.fmu.Unlock()
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// Held is how many deliveries of queue this client has fetched and not
// settled: what clients hold, and what a consumer fetched ahead. Once
// nobody holds or waits on the queue and its consumer has idled out, it is
// 0; a delivery whose channel died counts no more.
func (c *Client) Held(queue string) int64 {
	c.fmu.Lock()
	f := c.fetchers[queue]
	c.fmu.Unlock()
	if f == nil {
		return 0
	}
	return f.held.Load()
}

// usable is nil when gets may go to the broker.
func (c *Client) usable(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.pickConsume() == nil {
		return ErrNotConnected
	}
	return nil
}

// Published tells the fetcher of queue that a message was just published
// to it through this gateway: a wait that polls the queue looks at once.
func (c *Client) Published(queue string) {
	c.fmu.Lock()
	f := c.fetchers[queue]
	c.fmu.Unlock()
	if f != nil {
		f.poke()
	}
}

func (c *Client) pickConsume() *consumeConn {
	n := len(c.cons)
	start := int(c.next.Add(1)) % n
	for i := range n {
		cc := c.cons[(start+i)%n]
		if cc.sup.connected.Load() {
			return cc
		}
	}
	return nil
}

// adminConn is the connection that declares and inspects queues.
func (c *Client) adminConn() (*amqp091.Connection, error) {
	conn := c.cons[0].sup.current()
	if conn == nil {
		return nil, ErrNotConnected
	}
	return conn, nil
}

// EnsureQueue makes sure the queue exists. With passiveFirst, an existing
// queue is used as it is, whatever its arguments or policies (operators may
// have created it); only a missing one is declared from spec.
//
// It also learns whether the queue may be fetched ahead: only a classic
// queue may (see fetcher). The queue is declared with spec's arguments: the
// broker accepts that when the queue is missing (it is created) or exists
// with the same arguments, so its type is spec's; it refuses it (406,
// closing the channel) when the queue exists with other arguments, which
// with passiveFirst means: use it as it is, type unknown.
//
// Once ctx ends, no further broker call starts and ctx's error is
// returned; a call under way cannot be cancelled (amqp091-go) and ends
// within the RPC timeout.
func (c *Client) EnsureQueue(ctx context.Context, spec QueueSpec, passiveFirst bool) error {
	if _, ok := c.declared.Load(spec.Name); ok {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	args := spec.arguments(int(c.brokerMajor.Load()))
	err := c.onAdminChannel(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(spec.Name, true, false, false, false, args)
		return err
	})
	known := err == nil
	switch {
	case err == nil:
	case isQueueLimit(err):
		// A 406 too, but the queue does not exist: nothing to use as it is.
		return fmt.Errorf("%w: declare queue %q: %w", ErrQueueLimit, spec.Name, err)
	case passiveFirst && isPreconditionFailed(err):
		// Someone else's queue, with arguments of their own.
	case errors.Is(err, ErrNotConnected), errors.Is(err, ErrBrokerTimeout), errors.Is(err, ErrClosed):
		return err
	case isAccessRefused(err):
		// The user this client logs in as may not configure this queue:
		// the client's answer, not an operator's topology problem.
		return accessRefused(fmt.Sprintf("declare queue %q", spec.Name), err)
	default:
		return &TopologyError{Object: describe("queue", spec.Name, spec.Origin), Err: err}
	}
	if len(spec.Bindings) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Bindings are idempotent: an existing queue still gets them.
		err := c.onAdminChannel(func(ch *amqp091.Channel) error {
			for _, b := range spec.Bindings {
				if err := ch.QueueBind(spec.Name, b.RoutingKey, b.Exchange, false, nil); err != nil {
					if isAccessRefused(err) {
						return accessRefused(fmt.Sprintf("bind queue %q to exchange %q", spec.Name, b.Exchange), err)
					}
					obj := fmt.Sprintf("binding of %s to exchange %q", describe("queue", spec.Name, spec.Origin), b.Exchange)
					return &TopologyError{Object: obj, Err: err}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	c.fetcher(spec.Name).setPrefetch(known && !spec.Quorum)
	c.declared.Store(spec.Name, struct{}{})
	return nil
}

// adminChannels are the idle channels of the admin connection that
// declarations and inspections use: a channel that the broker closed on
// an error is dropped, a good one reused.
type adminChannels struct {
	mu   sync.Mutex
	idle []*amqp091.Channel // guarded by mu
}

// maxIdleAdminChannels bounds the admin channels kept open between uses.
const maxIdleAdminChannels = 4

// onAdminChannel runs fn on a channel of the admin connection that nothing
// else uses meanwhile, bounded by the RPC timeout.
func (c *Client) onAdminChannel(fn func(*amqp091.Channel) error) error {
	conn, err := c.adminConn()
	if err != nil {
		return err
	}
	return c.bounded(func() error {
		a := &c.admin
		var ch *amqp091.Channel
		a.mu.Lock()
		for len(a.idle) > 0 && ch == nil {
			ch, a.idle = a.idle[len(a.idle)-1], a.idle[:len(a.idle)-1]
			if ch.IsClosed() {
				ch = nil
			}
		}
		a.mu.Unlock()
		if ch == nil {
			var err error
			if ch, err = conn.Channel(); err != nil {
				return fmt.Errorf("%w: open channel: %w", ErrNotConnected, err)
			}
		}
		err := fn(ch)
		if err != nil || ch.IsClosed() {
			// After an error the broker has closed it.
			return err
		}
		a.mu.Lock()
		if len(a.idle) < maxIdleAdminChannels {
			a.idle = append(a.idle, ch)
			ch = nil
		}
		a.mu.Unlock()
		if ch != nil {
			_ = ch.Close()
		}
		return nil
	}, nil)
}

// onThrowawayChannel runs fn on a channel of its own, bounded by the RPC
// timeout: a refused declaration closes the channel it was made on.
func (c *Client) onThrowawayChannel(conn *amqp091.Connection, fn func(*amqp091.Channel) error) error {
	var ch *amqp091.Channel
	err := c.bounded(func() (err error) {
		if ch, err = conn.Channel(); err != nil {
			return fmt.Errorf("%w: open channel: %w", ErrNotConnected, err)
		}
		if err = fn(ch); err == nil {
			// After an error the broker has closed it.
			_ = ch.Close()
		}
		return err
	}, nil)
	return err
}

// Release drops what the client keeps for queue (its fetcher, that it was
// declared) when nothing runs on it and nothing of it is held: the caller
// stopped using the queue. A later use learns it again. A queue in use is
// left alone; the janitor releases it once idle.
func (c *Client) Release(queue string) {
	c.fmu.Lock()
	f := c.fetchers[queue]
	if f == nil || !f.releaseIfIdle(time.Time{}) {
		c.fmu.Unlock()
		return
	}
	delete(c.fetchers, queue)
	c.shrinkFetchersLocked()
	c.fmu.Unlock()
	c.forgetFetcher(f)
}

// shrinkFetchersLocked gives back the room of fetchers once they are far
// fewer than they were (see shrink.Map).
func (c *Client) shrinkFetchersLocked() {
	c.fetchers, c.fetchersPeak = shrink.Map(c.fetchers, c.fetchersPeak)
}

// Forget drops a queue from the declared cache, e.g. after the broker said
// it is gone.
func (c *Client) Forget(queue string) { c.declared.Delete(queue) }

// QueueDepth is the number of ready messages in queue, from a passive
// declaration on a throwaway channel: it never creates the queue. found is
// false when the queue does not exist. An ended ctx returns its error
// without a broker call.
func (c *Client) QueueDepth(ctx context.Context, queue string) (depth int, found bool, err error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	var q amqp091.Queue
	err = c.onAdminChannel(func(ch *amqp091.Channel) (err error) {
		q, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		return err
	})
	if isNotFound(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return q.Messages, true, nil
}

// inspectOn is inspect on a consume connection.
func (c *Client) inspectOn(cc *consumeConn, queue string) (amqp091.Queue, error) {
	conn := cc.sup.current()
	if conn == nil {
		return amqp091.Queue{}, ErrNotConnected
	}
	return c.inspect(conn, queue)
}

// inspect is a passive declaration on a throwaway channel of conn: a 404
// closes it.
func (c *Client) inspect(conn *amqp091.Connection, queue string) (amqp091.Queue, error) {
	var q amqp091.Queue
	err := c.onThrowawayChannel(conn, func(ch *amqp091.Channel) (err error) {
		q, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		return err
	})
	return q, err
}

// ConsumeChannels is, per consume connection, the channels it has open
// for gets and consumers (for tests and operators: bounded whatever the
// number of queues).
func (c *Client) ConsumeChannels() []int {
	out := make([]int, len(c.cons))
	for i, cc := range c.cons {
		p := cc.pool
		p.mu.Lock()
		out[i] = len(p.chans) + p.consumer
		p.mu.Unlock()
	}
	return out
}

// Fetchers is the number of queues the client keeps state for (for tests
// and operators: it shrinks as idle queues are released).
func (c *Client) Fetchers() int {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return len(c.fetchers)
}

// ConnectionName is the name the client's connections carry (with their
// role and index appended), as rabbitmqctl list_connections shows it.
func (c *Client) ConnectionName() string { return c.opts.ConnectionName }
