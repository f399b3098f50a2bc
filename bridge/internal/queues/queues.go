// Package queues resolves memcache keys to the queues and exchanges they
// mean (SPEC §3: YAML queues, auto-declared ones, kestrel fanout children,
// exchange key patterns) and keeps what this gateway instance knows of
// each queue it has used: its settings, its counters for stats and its
// ready count. It knows config and amqp, nothing of the memcache protocol.
package queues

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/shrink"
)

// AutoLabel is the metric label shared by queues that are not in the YAML,
// so that clients cannot grow the label set with keys of their own.
const AutoLabel = "_auto"

// Queue is what this instance knows of one queue it has used.
type Queue struct {
	Name  string
	Label string // metric label: the name of a YAML queue, else AutoLabel
	Ack   config.AckMode
	Lease time.Duration // reservation_timeout
	// spec is a YAML queue's declaration; an auto-declared one's is made
	// when needed (see Table.spec), so that an idle queue costs less.
	spec *amqp.QueueSpec
	// passive: the queue is auto-declared, so an existing one is used as
	// operators made it. Only such queues are ever released.
	passive bool

	Published atomic.Uint64 // stored through this instance since start
	Acked     atomic.Uint64 // acked through this instance since start
	Open      atomic.Int64  // reservations held here now

	// users counts the operations under way on the queue (a declaration,
	// a publish, a get or a wait); lastUse (unix nanos) is when one last
	// began or ended. The table releases a queue whose users and Open are
	// zero and whose lastUse is older than its idle time.
	users   atomic.Int64
	lastUse atomic.Int64

	// The ready count stats shows: depth is the count, or -1 when unknown
	// (missing queue, broker unreachable); depthAt (unix nanos) when it was
	// read, 0 never.
	depth   atomic.Int64
	depthAt atomic.Int64
}

// Done ends an operation begun by Readable or Route: the queue may be
// released once idle.
func (qs *Queue) Done() {
	qs.lastUse.Store(time.Now().UnixNano())
	qs.users.Add(-1)
}

// InUse is the number of operations under way on the queue.
func (qs *Queue) InUse() int64 { return qs.users.Load() }

// ErrTooManyQueues: a key would make a new queue while the table holds
// limits.max_queues queues.
var ErrTooManyQueues = errors.New("too many queues")

// IdleRelease is how long an auto-declared queue's state is kept after its
// last use when nothing of it is held, waited for or published (a table
// reads it when made; tests shorten it). Its next use makes it again.
var IdleRelease = 2 * time.Minute

// Table resolves keys to queues and remembers the queues in use (for stats
// and to bound them): the YAML ones, and the others until they are idle.
type Table struct {
	cfg    *config.Config
	broker *amqp.Client
	idle   atomic.Int64 // a time.Duration; see IdleRelease

	mu sync.RWMutex
	m  map[string]*Queue // guarded by mu
	// peak is the most entries m has had since it was last made: a Go map
	// keeps its room when entries go, so a table that shrank a lot is
	// copied into a smaller map.
	peak int // guarded by mu
	// lastSweep (unix nanos) is when the last sweep began; written under mu.
	lastSweep atomic.Int64

	// refreshing: one stats refresh of ready counts at a time; refreshWG
	// its goroutine, which may outlive the stats that started it.
	refreshing sync.Mutex
	refreshWG  sync.WaitGroup
}

// NewTable returns a table that knows the YAML queues of cfg and declares
// queues through broker.
func NewTable(cfg *config.Config, broker *amqp.Client) *Table {
	t := &Table{cfg: cfg, broker: broker, m: make(map[string]*Queue)}
	t.idle.Store(int64(IdleRelease))
	t.lastSweep.Store(time.Now().UnixNano())
	// YAML queues are listed by stats from the start, and never released.
	for i := range cfg.Queues {
		t.State(cfg.Queues[i].Name)
	}
	return t
}

// State returns the queue's state, creating it on first use whatever the
// limit. Callers have checked that the name may be used (configured or
// auto-declarable).
func (t *Table) State(name string) *Queue {
	t.mu.RLock()
	qs := t.m[name]
	t.mu.RUnlock()
	if qs != nil {
		return qs
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if qs = t.m[name]; qs == nil {
		qs = t.addLocked(name)
	}
	return qs
}

// Lookup returns the queue's state, nil when the table has none.
func (t *Table) Lookup(name string) *Queue {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.m[name]
}

// Len is the number of queues with state in the table (mcbridge_queues).
func (t *Table) Len() int {
	t.sweep(false)
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// addLocked makes the queue's state and adds it to the table.
func (t *Table) addLocked(name string) *Queue {
	var qs *Queue
	if q, ok := t.cfg.Queue(name); ok {
		spec := Spec(q)
		qs = &Queue{
			Name:  name,
			Label: name,
			Ack:   q.Ack,
			Lease: q.ReservationTimeout,
			spec:  &spec,
		}
	} else {
		d := t.cfg.Defaults
		qs = &Queue{
			Name:    name,
			Label:   AutoLabel,
			Ack:     d.Ack,
			Lease:   d.ReservationTimeout,
			passive: true,
		}
	}
	qs.depth.Store(-1)
	qs.lastUse.Store(time.Now().UnixNano())
	t.m[name] = qs
	t.peak = max(t.peak, len(t.m))
	return qs
}

// acquire returns the queue's state with one more operation under way,
// creating it unless the table is full.
func (t *Table) acquire(name string) (*Queue, error) {
	t.mu.RLock()
	qs := t.m[name]
	if qs != nil {
		// Under mu: a sweep (which holds it exclusively) sees the user.
		qs.users.Add(1)
	}
	t.mu.RUnlock()
	if qs != nil {
		qs.lastUse.Store(time.Now().UnixNano())
		return qs, nil
	}
	t.sweep(false)
	t.mu.Lock()
	defer t.mu.Unlock()
	if qs = t.m[name]; qs == nil {
		if limit := t.cfg.Limits.MaxQueues; limit > 0 && len(t.m) >= limit {
			return nil, ErrTooManyQueues
		}
		qs = t.addLocked(name)
	}
	qs.users.Add(1)
	qs.lastUse.Store(time.Now().UnixNano())
	return qs, nil
}

// SetIdle sets how long an idle auto-declared queue keeps its state (see
// IdleRelease), for tests.
func (t *Table) SetIdle(d time.Duration) { t.idle.Store(int64(d)) }

// Sweep releases the state of the auto-declared queues idle for the table's
// idle time (see IdleRelease), here and in the broker client, and returns
// how many it released.
func (t *Table) Sweep() int { return t.sweep(true) }

// sweep is Sweep; unless now is set, at most once in a quarter of the idle
// time, so that the callers on busy paths (a new queue, stats, a metrics
// scrape) cost one look at a clock.
func (t *Table) sweep(now bool) int {
	at := time.Now()
	idle := t.idle.Load()
	due := func() bool { return now || at.UnixNano()-t.lastSweep.Load() >= idle/4 }
	if !due() {
		return 0
	}
	t.mu.Lock()
	if !due() {
		t.mu.Unlock()
		return 0
	}
	t.lastSweep.Store(at.UnixNano())
	cut := at.UnixNano() - idle
	var released []string
	for name, qs := range t.m {
		// users is raised under mu (read), so none can begin now.
		if qs.passive && qs.users.Load() == 0 && qs.Open.Load() == 0 && qs.lastUse.Load() <= cut {
			delete(t.m, name)
			released = append(released, name)
		}
	}
	t.m, t.peak = shrink.Map(t.m, t.peak)
	t.mu.Unlock()
	if t.broker != nil {
		for _, name := range released {
			t.broker.Release(name)
		}
	}
	return len(released)
}

// Readable returns the queue a get of name reads, declaring it if needed,
// or nil when the name is neither configured nor auto-declarable (a miss).
// A queue returned has one more operation under way: the caller calls its
// Done when the operation ends. ErrTooManyQueues: the name would be a new
// queue and the table is full.
func (t *Table) Readable(ctx context.Context, name string) (*Queue, error) {
	if _, ok := t.cfg.Queue(name); !ok && !t.cfg.AutoDeclarable(name) && t.fanoutParent(name) == "" {
		return nil, nil
	}
	qs, err := t.acquire(name)
	if err != nil {
		return nil, err
	}
	if err := t.broker.EnsureQueue(ctx, t.spec(qs), qs.passive); err != nil {
		qs.Done()
		return nil, err
	}
	return qs, nil
}

// spec is what declaring the queue sends: a YAML queue's settings, else
// the defaults, with a kestrel fanout child bound to its parent.
func (t *Table) spec(qs *Queue) amqp.QueueSpec {
	if qs.spec != nil {
		return *qs.spec
	}
	spec := amqp.QueueSpec{Name: qs.Name, Quorum: t.cfg.Defaults.QueueType == config.QueueQuorum}
	if parent := t.fanoutParent(qs.Name); parent != "" {
		spec.Bindings = []amqp.BindingSpec{{Exchange: parent}}
	}
	return spec
}

// fanoutParent implements kestrel's fanout naming: "parent+child" is a
// queue bound to the fanout exchange "parent", whatever auto_declare says.
// It returns "" when name is not such a child.
func (t *Table) fanoutParent(name string) string {
	parent, child, ok := strings.Cut(name, "+")
	if !ok || child == "" || strings.HasPrefix(name, "amq.") {
		return ""
	}
	if ex, found := t.cfg.Exchange(parent); found && ex.Type == config.ExchangeFanout {
		return parent
	}
	return ""
}

// Route says where a set of key goes: the first exchange whose keys match,
// else the queue of that name via the default exchange (qs, which the
// caller calls Done on, as for Readable). ok is false when neither applies
// (NOT_STORED).
func (t *Table) Route(ctx context.Context, key string) (exchange string, qs *Queue, ok bool, err error) {
	if ex, found := t.cfg.ExchangeFor(key); found {
		return ex.Name, nil, true, nil
	}
	qs, err = t.Readable(ctx, key)
	if err != nil || qs == nil {
		return "", nil, false, err
	}
	return "", qs, true, nil
}

// List returns every known queue, sorted by name.
func (t *Table) List() []*Queue {
	t.sweep(false)
	t.mu.RLock()
	out := make([]*Queue, 0, len(t.m))
	for _, qs := range t.m {
		out = append(out, qs)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stats reads ready counts from the broker; these bound what one stats
// command costs, however many queues there are.
const (
	// depthTTL is how long a queue's ready count is reused, so that a
	// monitoring loop cannot turn into a stream of broker calls.
	depthTTL = time.Second
	// refreshBudget bounds the time a stats command spends reading counts;
	// refreshCalls the broker calls it makes; refreshWorkers how many run at
	// once. Counts not read show their last value.
	refreshBudget  = 250 * time.Millisecond
	refreshCalls   = 2000
	refreshWorkers = 4
)

// RefreshCounts reads the ready counts of the queues of list that are
// older than depthTTL, the oldest (or never read) first: at most
// refreshCalls, started within refreshBudget. It returns when they are
// read or refreshBudget has passed, whichever is first: calls still under
// way then go on in the background (see Wait) and their counts serve the
// next stats. While one refresh runs, another returns at once: its caller
// shows what is cached.
func (t *Table) RefreshCounts(ctx context.Context, list []*Queue) {
	if t.broker == nil || !t.refreshing.TryLock() {
		return
	}
	now := time.Now().UnixNano()
	var stale []*Queue
	for _, qs := range list {
		if now-qs.depthAt.Load() >= int64(depthTTL) {
			stale = append(stale, qs)
		}
	}
	sort.Slice(stale, func(i, j int) bool { return stale[i].depthAt.Load() < stale[j].depthAt.Load() })
	stale = stale[:min(len(stale), refreshCalls)]
	done := make(chan struct{})
	t.refreshWG.Add(1)
	go func() {
		defer t.refreshWG.Done()
		defer t.refreshing.Unlock()
		defer close(done)
		t.readCounts(ctx, stale)
	}()
	budget := time.NewTimer(refreshBudget)
	defer budget.Stop()
	select {
	case <-done:
	case <-budget.C:
	}
}

// readCounts reads the ready counts of the queues, refreshWorkers at a
// time, starting none after refreshBudget or once ctx ends.
func (t *Table) readCounts(ctx context.Context, stale []*Queue) {
	ctx, cancel := context.WithTimeout(ctx, refreshBudget)
	defer cancel()
	next := make(chan *Queue)
	var wg sync.WaitGroup
	for range refreshWorkers {
		wg.Go(func() {
			for qs := range next {
				n, found, err := t.broker.QueueDepth(ctx, qs.Name)
				if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
					continue // not started: not read
				}
				if err != nil || !found {
					n = -1
				}
				qs.depth.Store(int64(n))
				qs.depthAt.Store(time.Now().UnixNano())
			}
		})
	}
feed:
	for _, qs := range stale {
		select {
		case next <- qs:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
}

// Wait returns once no count read of RefreshCounts runs: after the context
// given to it ended, within a broker call's timeout.
func (t *Table) Wait() { t.refreshWG.Wait() }

// ReadyCount is the number of ready messages in the broker as last read
// by RefreshCounts; ok is false when it is unknown (never read, queue
// missing or broker unreachable).
func (qs *Queue) ReadyCount() (int, bool) {
	n := qs.depth.Load()
	return int(n), n >= 0
}

// Spec converts a YAML queue to what the amqp package declares.
func Spec(q *config.Queue) amqp.QueueSpec {
	spec := amqp.QueueSpec{
		Name:               q.Name,
		Quorum:             q.Type == config.QueueQuorum,
		MaxLength:          q.MaxLength,
		Overflow:           string(q.Overflow),
		MessageTTL:         q.MessageTTL,
		DeadLetterExchange: q.DeadLetterExchange,
		DeliveryLimit:      q.DeliveryLimit,
	}
	if q.Line > 0 {
		spec.Origin = fmt.Sprintf("config line %d", q.Line)
	}
	for _, b := range q.Bindings {
		spec.Bindings = append(spec.Bindings, amqp.BindingSpec{Exchange: b.Exchange, RoutingKey: b.RoutingKey})
	}
	return spec
}

// Topology is everything the YAML declares.
func Topology(cfg *config.Config) amqp.Topology {
	var t amqp.Topology
	for _, ex := range cfg.Exchanges {
		spec := amqp.ExchangeSpec{Name: ex.Name, Kind: string(ex.Type)}
		if ex.Line > 0 {
			spec.Origin = fmt.Sprintf("config line %d", ex.Line)
		}
		t.Exchanges = append(t.Exchanges, spec)
	}
	for i := range cfg.Queues {
		t.Queues = append(t.Queues, Spec(&cfg.Queues[i]))
	}
	return t
}
