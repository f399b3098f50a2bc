package bridge

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

// autoLabel is the metric label shared by queues that are not in the YAML,
// so that clients cannot grow the label set with keys of their own.
const autoLabel = "_auto"

// queueState is what this instance knows of one queue it has used.
type queueState struct {
	name  string
	label string // metric label
	ack   config.AckMode
	lease time.Duration
	spec  amqp.QueueSpec
	// passive: the queue is auto-declared, so an existing one is used as
	// operators made it.
	passive bool

	published atomic.Uint64 // stored through this instance since start
	acked     atomic.Uint64 // acked through this instance since start
	open      atomic.Int64  // reservations held here now

	depthMu sync.Mutex
	depth   int       // guarded by depthMu
	depthAt time.Time // guarded by depthMu
	depthOK bool      // guarded by depthMu
}

// queueTable resolves keys to queues and remembers every queue used since
// start (for stats).
type queueTable struct {
	cfg    *config.Config
	broker *amqp.Client

	mu sync.RWMutex
	m  map[string]*queueState // guarded by mu
}

func newQueueTable(cfg *config.Config, broker *amqp.Client) *queueTable {
	t := &queueTable{cfg: cfg, broker: broker, m: make(map[string]*queueState)}
	// YAML queues are listed by stats from the start.
	for i := range cfg.Queues {
		t.state(cfg.Queues[i].Name)
	}
	return t
}

// state returns the queue's state, creating it on first use. Callers have
// checked that the name may be used (configured or auto-declarable).
func (t *queueTable) state(name string) *queueState {
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
		qs = &queueState{
			name:  name,
			label: name,
			ack:   q.Ack,
			lease: q.ReservationTimeout,
			spec:  QueueSpec(q),
		}
	} else {
		d := t.cfg.Defaults
		qs = &queueState{
			name:    name,
			label:   autoLabel,
			ack:     d.Ack,
			lease:   d.ReservationTimeout,
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

// readable returns the queue a get of name reads, declaring it if needed,
// or nil when the name is neither configured nor auto-declarable (a miss).
func (t *queueTable) readable(ctx context.Context, name string) (*queueState, error) {
	if _, ok := t.cfg.Queue(name); !ok && !t.cfg.AutoDeclarable(name) && t.fanoutParent(name) == "" {
		return nil, nil
	}
	qs := t.state(name)
	if err := t.broker.EnsureQueue(ctx, qs.spec, qs.passive); err != nil {
		return nil, err
	}
	return qs, nil
}

// fanoutParent implements kestrel's fanout naming: "parent+child" is a
// queue bound to the fanout exchange "parent", whatever auto_declare says.
// It returns "" when name is not such a child.
func (t *queueTable) fanoutParent(name string) string {
	parent, child, ok := strings.Cut(name, "+")
	if !ok || child == "" || strings.HasPrefix(name, "amq.") {
		return ""
	}
	if ex, found := t.cfg.Exchange(parent); found && ex.Type == config.ExchangeFanout {
		return parent
	}
	return ""
}

// route says where a set of key goes: the first exchange whose keys match,
// else the queue of that name via the default exchange. ok is false when
// neither applies (NOT_STORED).
func (t *queueTable) route(ctx context.Context, key string) (exchange string, qs *queueState, ok bool, err error) {
	if ex, found := t.cfg.ExchangeFor(key); found {
		return ex.Name, nil, true, nil
	}
	qs, err = t.readable(ctx, key)
	if err != nil || qs == nil {
		return "", nil, false, err
	}
	return "", qs, true, nil
}

// list returns every known queue, sorted by name.
func (t *queueTable) list() []*queueState {
	t.mu.RLock()
	out := make([]*queueState, 0, len(t.m))
	for _, qs := range t.m {
		out = append(out, qs)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// depthTTL is how long a queue's ready count is reused by stats, so that a
// monitoring loop cannot turn into a stream of broker calls.
const depthTTL = time.Second

// readyCount is the number of ready messages in the broker, cached briefly;
// ok is false when it is unknown (queue missing or broker unreachable).
func (qs *queueState) readyCount(ctx context.Context, broker *amqp.Client) (int, bool) {
	qs.depthMu.Lock()
	defer qs.depthMu.Unlock()
	if time.Since(qs.depthAt) < depthTTL {
		return qs.depth, qs.depthOK
	}
	n, found, err := broker.QueueDepth(ctx, qs.name)
	qs.depth, qs.depthOK, qs.depthAt = n, err == nil && found, time.Now()
	return qs.depth, qs.depthOK
}

// QueueSpec converts a YAML queue to what the amqp package declares.
func QueueSpec(q *config.Queue) amqp.QueueSpec {
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
		t.Queues = append(t.Queues, QueueSpec(&cfg.Queues[i]))
	}
	return t
}
