package amqp

import (
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

const (
	// defaultGetChannels bounds the basic.get channels of one consume
	// connection, which every queue shares (RabbitMQ's channel_max is
	// 2047 by default; consumers and throwaway channels need room too).
	defaultGetChannels = 512
	// defaultConsumers bounds the consumer channels (queues fetched ahead
	// or waited on) of one consume connection; past it a queue is served
	// with basic.get only.
	defaultConsumers = 512
	// channelIdle: a get channel with nothing unsettled is closed after
	// this long unused (the pool keeps minIdleChannels open).
	channelIdle = 10 * time.Second
	// minIdleChannels stay open on an idle connection.
	minIdleChannels = 4
	// shareCheckTTL: a queue that was checked to exist this recently may
	// use a channel that another queue's deliveries are on.
	shareCheckTTL = time.Second
)

// chanPool is the get channels of one consume connection, shared by every
// queue, and the count of its consumer channels. Channels are bounded, so
// that any number of queues can be served (one channel per queue ran the
// connection out of channels at 2,047 queues).
//
// Isolation: a basic.get of a queue that an operator deleted makes the
// broker close the channel, and every reservation on it is lost (the
// broker requeues them). So a queue gets, in order of preference, a
// channel that holds only its own deliveries, a channel that holds none,
// or a new channel; only when the pool is full does it share a channel
// that holds another queue's deliveries, and then only right after a
// passive check (on a throwaway channel) says the queue exists.
type chanPool struct {
	c        *Client
	cc       *consumeConn
	max      int
	maxCons  int
	consumer int // consumer channels open, guarded by mu

	mu      sync.Mutex
	opened  *sync.Cond      // on mu: a channel finished opening
	chans   []*queueChannel // guarded by mu: live get channels
	opening int             // guarded by mu
	next    int             // guarded by mu
	shared  logLimiter      // one log line a minute while channels are shared
}

func newChanPool(c *Client, cc *consumeConn) *chanPool {
	p := &chanPool{c: c, cc: cc, max: c.opts.GetChannels, maxCons: c.opts.Consumers}
	p.opened = sync.NewCond(&p.mu)
	return p
}

// home is the consume connection a queue's gets and consumer use first:
// queues spread over the connections by name.
func (c *Client) home(queue string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(queue))
	return int(h.Sum32() % uint32(len(c.cons)))
}

// pools returns the pools of the connections that are up, the queue's
// home first.
func (c *Client) pools(queue string) []*chanPool {
	n := len(c.cons)
	start := c.home(queue)
	out := make([]*chanPool, 0, n)
	for i := range n {
		cc := c.cons[(start+i)%n]
		if cc.sup.connected.Load() {
			out = append(out, cc.pool)
		}
	}
	return out
}

// channel returns a get channel for one RPC of f, locked.
func (f *fetcher) channel() (*queueChannel, error) {
	pools := f.c.pools(f.queue)
	if len(pools) == 0 {
		return nil, ErrNotConnected
	}
	// Own, free or new, on any connection; then share.
	for _, p := range pools {
		if qc, err := p.exclusive(f); qc != nil || err != nil {
			return qc, err
		}
	}
	return pools[0].share(f)
}

// exclusive returns a channel of p that holds no other queue's deliveries,
// locked, or nil when there is none and p is full.
func (p *chanPool) exclusive(f *fetcher) (*queueChannel, error) {
	p.mu.Lock()
	p.dropClosedLocked()
	// f's own channel, then a free one.
	for _, free := range [...]bool{false, true} {
		for _, qc := range p.chans {
			if (!free && qc.owner == f || free && qc.outstanding.Load() == 0) && qc.mu.TryLock() {
				if qc.outstanding.Load() == 0 || qc.owner == f {
					qc.owner = f
					clear(qc.checked)
					p.mu.Unlock()
					return qc, nil
				}
				qc.mu.Unlock()
			}
		}
	}
	if len(p.chans)+p.opening < p.max {
		p.opening++
		p.mu.Unlock()
		qc, err := p.open(nil)
		p.mu.Lock()
		p.opening--
		if err == nil {
			qc.mu.Lock()
			qc.owner = f
			p.chans = append(p.chans, qc)
		}
		p.opened.Broadcast()
		p.mu.Unlock()
		return qc, err
	}
	// f's own channel, when busy: wait for it rather than share (an RPC
	// timeout at most: a stuck get may hold it for a minute).
	for _, qc := range p.chans {
		if qc.owner == f {
			p.mu.Unlock()
			if qc.lockOpen(p.c) {
				return qc, nil
			}
			return nil, qc.lockError()
		}
	}
	p.mu.Unlock()
	return nil, nil
}

// share returns, locked, the channel of p with the fewest unsettled
// deliveries, which other queues' deliveries are on, once f's queue is
// known to exist.
func (p *chanPool) share(f *fetcher) (*queueChannel, error) {
	p.mu.Lock()
	for len(p.chans) == 0 && p.opening > 0 {
		p.opened.Wait()
	}
	p.dropClosedLocked()
	if len(p.chans) == 0 {
		p.mu.Unlock()
		return nil, ErrNotConnected
	}
	var best *queueChannel
	for _, qc := range p.chans {
		if best == nil || qc.outstanding.Load() < best.outstanding.Load() {
			best = qc
		}
	}
	checked := !best.checked[f].IsZero() && time.Since(best.checked[f]) < shareCheckTTL
	p.mu.Unlock()
	if p.shared.allow(time.Minute) {
		p.c.opts.Logger.Warn("get channels all in use; queues share channels", "max", p.max)
	}
	if !checked {
		if _, err := p.c.inspectOn(p.cc, f.queue); err != nil {
			if isNotFound(err) {
				return nil, fmt.Errorf("%w: %q", ErrQueueNotFound, f.queue)
			}
			return nil, err
		}
		p.mu.Lock()
		if best.checked == nil {
			best.checked = make(map[*fetcher]time.Time)
		}
		best.checked[f] = time.Now()
		p.mu.Unlock()
	}
	if !best.lockOpen(p.c) {
		return nil, best.lockError()
	}
	return best, nil
}

func (p *chanPool) dropClosedLocked() {
	live := p.chans[:0]
	for _, qc := range p.chans {
		if !qc.gone() {
			live = append(live, qc)
		}
	}
	clear(p.chans[len(live):])
	p.chans = live
}

// open opens a channel on the pool's connection, and a goroutine that
// tells the observer when it dies with deliveries on it, so that their
// reservations are dropped at once.
func (p *chanPool) open(consumerOf *fetcher) (*queueChannel, error) {
	conn := p.cc.sup.current()
	if conn == nil {
		return nil, ErrNotConnected
	}
	var ch *amqp091.Channel
	err := p.c.bounded(func() (err error) {
		ch, err = conn.Channel()
		return err
	}, func(err error) {
		if err == nil {
			_ = ch.Close()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%w: open channel: %w", ErrNotConnected, err)
	}
	qc := &queueChannel{ch: ch, acks: p.cc.acks.Load(), ledger: newTagLedger(), consumerOf: consumerOf}
	qc.lastUse.Store(time.Now().UnixNano())
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	p.c.goFetch(func() {
		select {
		case err := <-closed:
			if err != nil {
				p.c.opts.Logger.Debug("queue channel closed", "err", err)
			}
			if qc.outstanding.Load() > 0 {
				p.c.opts.Observer.DeliveriesLost()
			}
			if f := qc.consumerOf; f != nil {
				f.channelClosed(qc)
				p.consumerClosed()
			}
		case <-p.c.runCtx.Done():
			// Closing the connection closes the channel.
		}
	})
	return qc, nil
}

// openConsumer opens a channel for a consumer of f, unless the connection
// has maxCons of them already.
func (p *chanPool) openConsumer(f *fetcher) (*queueChannel, error) {
	p.mu.Lock()
	if p.consumer >= p.maxCons {
		p.mu.Unlock()
		return nil, errTooManyConsumers
	}
	p.consumer++
	p.mu.Unlock()
	qc, err := p.open(f)
	if err != nil {
		p.consumerClosed()
		return nil, err
	}
	return qc, nil
}

func (p *chanPool) consumerClosed() {
	p.mu.Lock()
	p.consumer--
	p.mu.Unlock()
}

// closeIdle closes get channels unused for channelIdle with nothing
// unsettled on them, keeping minIdleChannels.
func (p *chanPool) closeIdle(now time.Time) {
	p.mu.Lock()
	p.dropClosedLocked()
	var idle []*queueChannel
	keep := p.chans[:0]
	for _, qc := range p.chans {
		if len(p.chans)-len(idle) > minIdleChannels && qc.outstanding.Load() == 0 &&
			now.UnixNano()-qc.lastUse.Load() > int64(channelIdle) && qc.mu.TryLock() {
			qc.closing.Store(true)
			idle = append(idle, qc)
			continue
		}
		keep = append(keep, qc)
	}
	clear(p.chans[len(keep):])
	p.chans = keep
	p.mu.Unlock()
	for _, qc := range idle {
		_ = qc.ch.Close()
		qc.mu.Unlock()
	}
}

// forget drops f from the channels' records (f is being released).
func (p *chanPool) forget(f *fetcher) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, qc := range p.chans {
		if qc.owner == f {
			qc.owner = nil
		}
		delete(qc.checked, f)
	}
}

// size is the number of get channels open, for tests and metrics.
func (p *chanPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.chans)
}

// logLimiter lets one log line through per interval.
type logLimiter struct {
	mu   sync.Mutex
	next time.Time
}

func (l *logLimiter) allow(every time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Before(l.next) {
		return false
	}
	l.next = now.Add(every)
	return true
}
