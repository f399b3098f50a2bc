// Package queues resolves memcache keys to the queues and exchanges they
// mean (SPEC §3: YAML queues, auto-declared ones, kestrel fanout children,
// exchange key patterns) and keeps what this gateway instance knows of
// each queue it has used: its settings, its counters for stats and its
// ready count. It knows config and amqp, nothing of the memcache protocol.
package queues

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/config"
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
	spec  amqp.QueueSpec
	// passive: the queue is auto-declared, so an existing one is used as
	// operators made it.
	passive bool

	Published atomic.Uint64 // stored through this instance since start
	Acked     atomic.Uint64 // acked through this instance since start
	Open      atomic.Int64  // reservations held here now

	depthMu sync.Mutex
	depth   int       // guarded by depthMu
	depthAt time.Time // guarded by depthMu
	depthOK bool      // guarded by depthMu
}

// Table resolves keys to queues and remembers every queue used since
// start (for stats).
type Table struct {
	cfg    *config.Config
	broker *amqp.Client

	mu sync.RWMutex
	m  map[string]*Queue // guarded by mu
}

// NewTable returns a table that knows the YAML queues of cfg and declares
// queues through broker.
func NewTable(cfg *config.Config, broker *amqp.Client) *Table {
	t := &Table{cfg: cfg, broker: broker, m: make(map[string]*Queue)}
	// YAML queues are listed by stats from the start.
	for i := range cfg.Queues {
		t.State(cfg.Queues[i].Name)
	}
	return t
}

// State returns the queue's state, creating it on first use. Callers have
// checked that the name may be used (configured or auto-declarable).
func (t *Table) State(name string) *Queue {
	t.mu.RLock()
	qs := t.m[name]
	t.mu.RUnlock()
	if qs != nil {
		return qs
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if qs = t.m[name]; qs != nil {
		return qs
	}
	if q, ok := t.cfg.Queue(name); ok {
		qs = &Queue{
			Name:  name,
			Label: name,
			Ack:   q.Ack,
			Lease: q.ReservationTimeout,
			spec:  Spec(q),
		}
	} else {
		d := t.cfg.Defaults
		qs = &Queue{
			Name:    name,
			Label:   AutoLabel,
			Ack:     d.Ack,
			Lease:   d.ReservationTimeout,
			spec:    amqp.QueueSpec{Name: name, Quorum: d.QueueType == config.QueueQuorum},
			passive: true,
		}
		if parent := t.fanoutParent(name); parent != "" {
			qs.spec.Bindings = []amqp.BindingSpec{{Exchange: parent}}
		}
	}
	t.m[name] = qs
	return qs
}

// Readable returns the queue a get of name reads, declaring it if needed,
// or nil when the name is neither configured nor auto-declarable (a miss).
func (t *Table) Readable(ctx context.Context, name string) (*Queue, error) {
	if _, ok := t.cfg.Queue(name); !ok && !t.cfg.AutoDeclarable(name) && t.fanoutParent(name) == "" {
		return nil, nil
	}
	qs := t.State(name)
	if err := t.broker.EnsureQueue(ctx, qs.spec, qs.passive); err != nil {
		return nil, err
	}
	return qs, nil
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
// else the queue of that name via the default exchange (qs). ok is false
// when neither applies (NOT_STORED).
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
	t.mu.RLock()
	out := make([]*Queue, 0, len(t.m))
	for _, qs := range t.m {
		out = append(out, qs)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// depthTTL is how long a queue's ready count is reused by stats, so that a
// monitoring loop cannot turn into a stream of broker calls.
const depthTTL = time.Second

// ReadyCount is the number of ready messages in the broker, cached briefly;
// ok is false when it is unknown (queue missing or broker unreachable).
func (qs *Queue) ReadyCount(ctx context.Context, broker *amqp.Client) (int, bool) {
	qs.depthMu.Lock()
	defer qs.depthMu.Unlock()
	if time.Since(qs.depthAt) < depthTTL {
		return qs.depth, qs.depthOK
	}
	n, found, err := broker.QueueDepth(ctx, qs.Name)
	qs.depth, qs.depthOK, qs.depthAt = n, err == nil && found, time.Now()
	return qs.depth, qs.depthOK
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
