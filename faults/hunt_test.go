package faults

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// TestHunt hunts for broken delivery guarantees (SPEC §4) in the spirit of
// Jepsen's queue checkers: clients over text, binary and meta run seeded
// random operations (set to healthy, full reject-publish, unroutable,
// quorum with a delivery limit, auto-ack and doomed queues; get, gets, gat,
// kestrel options, waits, peeks, delete, ack by id, touch, give-backs, held
// leases, disconnects) while faults are injected (the broker link cut or
// stalled, a queue that stops confirming, broker-side connection closes, a
// queue deleted).
// Every request and reply goes into a history; at the end the clients
// leave, the queues are drained with raw AMQP and the history is checked
// against what the SPEC promises. A failing run prints its seed:
//
//	MCBRIDGE_HUNT_SEED=<seed> go test -run TestHunt ./faults/
//
// replays the same operations and fault schedule (the interleaving is the
// machine's). MCBRIDGE_HUNT_DURATION sets how long it runs (default 25s).
func TestHunt(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MCBRIDGE_HUNT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MCBRIDGE_HUNT_SEED: %v", err)
		}
	}
	run := 25 * time.Second
	if s := os.Getenv("MCBRIDGE_HUNT_DURATION"); s != "" {
		var err error
		if run, err = time.ParseDuration(s); err != nil {
			t.Fatalf("MCBRIDGE_HUNT_DURATION: %v", err)
		}
	}
	t.Logf("seed %d (replay with MCBRIDGE_HUNT_SEED=%d), %v", seed, seed, run)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d: replay with MCBRIDGE_HUNT_SEED=%d go test -run TestHunt ./faults/", seed, seed)
		}
	})
	huntOnce(t, seed, run)
}

// Queue kinds of the hunt.
type huntQueues struct {
	healthy, doomed string // classic, auto-declared by the gateway
	fifo            string // classic, in the YAML for a metric label of its own
	full            string // classic, max_length 3, reject-publish
	quorum, dead    string // quorum, delivery_limit 3, dead-lettered to dead
	auto            string // ack: auto
	void            string // a key routed to a fanout exchange that nothing is bound to
}

const huntDeliveryLimit = 3

func huntOnce(t *testing.T, seed uint64, run time.Duration) {
	prefix := "hunt" + strconv.FormatUint(seed%100000, 10)
	qs := huntQueues{
		healthy: prefix + ".healthy", fifo: prefix + ".fifo", doomed: prefix + ".doomed",
		full: prefix + ".full", quorum: prefix + ".quorum", dead: prefix + ".dead",
		auto: prefix + ".auto", void: prefix + "void.x",
	}
	for _, q := range []string{qs.healthy, qs.fifo, qs.doomed, qs.full, qs.quorum, qs.dead, qs.auto} {
		t.Cleanup(func() { testbroker.Delete(t, q) })
	}
	t.Cleanup(func() { testbroker.Delete(t, prefix+".dlx") })
	y := fmt.Sprintf(`listen: 127.0.0.1:0
metrics_listen: ""
amqp:
  confirm_timeout: 1500ms
defaults:
  reservation_timeout: 2s
exchanges:
  - {name: %[1]s.dlx, type: fanout}
  - {name: %[1]svoid, type: fanout, keys: ["%[1]svoid.*"]}
queues:
  - {name: %[2]s, max_length: 3, overflow: reject-publish}
  - {name: %[3]s, type: quorum, delivery_limit: %[6]d, dead_letter_exchange: %[1]s.dlx}
  - {name: %[4]s, bindings: [{exchange: %[1]s.dlx}]}
  - {name: %[5]s, ack: auto}
  - {name: %[7]s}
`, prefix, qs.full, qs.quorum, qs.dead, qs.auto, huntDeliveryLimit, qs.fifo)
	cfg, err := config.Load([]byte(y))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, y)
	}
	cfg.AMQP.URLs = testgateway.Config().AMQP.URLs
	name := testgateway.UniqueName()
	p := startProxy(t, testbroker.Addr, publishConnName(name), nil)
	opts := testgateway.Options{URLs: []string{proxyURL(p)}, ConnectionName: name}
	if path := os.Getenv("MCBRIDGE_HUNT_LOG"); path != "" {
		// The gateway's debug log, to follow a failure through it.
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		opts.Logs = f
	}
	g := testgateway.Start(t, cfg, opts)

	h := &history{}
	rng := rand.New(rand.NewPCG(seed, 1))
	clients := 10
	if n, err := strconv.Atoi(os.Getenv("MCBRIDGE_HUNT_CLIENTS")); err == nil {
		clients = n // to narrow a failure down
	}
	deadline := time.Now().Add(run)
	var wg sync.WaitGroup
	errs := make(chan error, clients+3)
	for i := range clients {
		cl := &huntClient{id: i, f: framing(rng.IntN(3)), addr: g.Addr, qs: qs, h: h, rng: rand.New(rand.NewPCG(seed, uint64(i)+10))}
		wg.Go(func() { errs <- cl.run(deadline) })
	}
	fifo := &fifoLane{addr: g.Addr, q: qs.fifo, h: h, f: framing(rng.IntN(3)),
		prodRng: rand.New(rand.NewPCG(seed, 2)), consRng: rand.New(rand.NewPCG(seed, 4)),
		redeliveries: func() float64 { return g.Metric("mcbridge_redelivered_total", "queue", qs.fifo) }}
	wg.Go(func() { errs <- fifo.produce(deadline) })
	wg.Go(func() { errs <- fifo.consume(deadline) })
	faults := &faultInjector{t: t, p: p, g: g, qs: qs, h: h, rng: rand.New(rand.NewPCG(seed, 3))}
	if os.Getenv("MCBRIDGE_HUNT_FAULTS") != "off" {
		wg.Go(func() { errs <- faults.run(deadline) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}

	// Everyone is gone: what the gateway holds goes back, and nothing may
	// stay unacked (a delivery stranded in the gateway would).
	p.Resume()
	g.WaitReady(30 * time.Second)
	queues := []string{qs.healthy, qs.fifo, qs.doomed, qs.full, qs.quorum, qs.dead, qs.auto}
	testbroker.Eventually(t, 20*time.Second, "the gateway to hold nothing unacked once the clients left", func() bool {
		for _, q := range queues {
			if exists(t, q) && testbroker.Unacked(t, q) != 0 {
				return false
			}
		}
		return true
	})
	// Nor may the gateway count a delivery as held that nobody has: the
	// broker requeued those of channels that died (a count that leaked
	// widened every later consumer's window, up to 4,096 fetched ahead).
	nothingHeld(t, g, queues, 20*time.Second)
	drained := map[string][]string{}
	for _, q := range queues {
		drained[q] = drainRaw(t, q)
	}
	ops, handouts := h.counts()
	t.Logf("%d operations by %d clients and a FIFO pair (%d hand-outs), %d faults: %s", ops, clients, handouts, len(h.faults), faults.summary())
	for _, v := range h.check(qs, drained) {
		t.Error(v)
	}
}

// exists reports whether queue q exists on the broker.
func exists(t testing.TB, q string) bool {
	ch := testbroker.Channel(t)
	_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	return err == nil
}

// drainRaw takes every message of q with raw AMQP (auto-ack).
func drainRaw(t testing.TB, q string) []string {
	t.Helper()
	ch := testbroker.Channel(t)
	var out []string
	for {
		m, ok, err := ch.Get(q, true)
		var aerr *amqp091.Error
		if errors.As(err, &aerr) && aerr.Code == amqp091.NotFound {
			return out
		}
		if err != nil {
			t.Fatalf("drain %s: %v", q, err)
		}
		if !ok {
			return out
		}
		out = append(out, string(m.Body))
	}
}

// ---- history ----

type evKind int

func (k evKind) String() string {
	return [...]string{"set", "handout", "ack", "close", "giveback", "touch", "disconnect", "miss", "get error"}[k]
}

const (
	evSet evKind = iota
	evHandout
	evAck      // a delete, cas, md or binary DELETE; ok: acked
	evClose    // kestrel /close: an ack the reply does not confirm
	evGiveBack // /abort, a negative touch: the message goes back
	evTouch    // a lease change; ok: touched
	evDisconnect
	// The FIFO lane's gets that handed nothing out, for its reports: a
	// miss, or a SERVER_ERROR (body: the reply).
	evMiss
	evGetError
)

// event is one request and what it was told. sent is when the request
// left, at when its reply came: the gateway acted in between.
type event struct {
	kind       evKind
	client     int
	queue      string
	body       string
	id         uint64
	lease      time.Duration // handouts and touches: the lease asked
	peek, auto bool          // handouts without a reservation
	// redelivered: a hand-out the broker flagged as delivered before (the
	// gateway's mcbridge_redelivered_total grew across the get).
	redelivered bool
	ok          bool
	set         setOutcome
	sent, at    time.Time
}

type history struct {
	mu     sync.Mutex
	events []event
	faults []faultWindow
	// fifo is what the FIFO consumer did and saw, in order: hand-outs, acks,
	// give-backs, and the misses and errors between them.
	fifo []event
	ids  []idRef // reservation ids seen, for acks by id from other clients
}

// faultWindow is when a fault lasted, and a moment after: a reconnect or a
// requeue it causes lands just after it ends.
type faultWindow struct {
	kind     string
	from, to time.Time
}

const faultAfterglow = 200 * time.Millisecond

type idRef struct {
	queue string
	id    uint64
}

func (h *history) add(e event) {
	h.mu.Lock()
	h.events = append(h.events, e)
	if e.kind == evHandout && e.id != 0 && !e.peek && !e.auto && e.client != fifoClient {
		h.ids = append(h.ids, idRef{e.queue, e.id})
		if len(h.ids) > 200 {
			h.ids = h.ids[len(h.ids)-200:]
		}
	}
	h.mu.Unlock()
}

// noteFIFO adds an event of the FIFO lane's consumer to its story.
func (h *history) noteFIFO(e event) {
	h.mu.Lock()
	h.fifo = append(h.fifo, e)
	h.mu.Unlock()
}

// nothingHeld waits until the gateway counts no delivery of queues as held
// (amqp.Client.Held): once every client is gone, a count left is a leak.
func nothingHeld(t *testing.T, g *testgateway.Gateway, queues []string, within time.Duration) {
	t.Helper()
	testbroker.Eventually(t, within, "the gateway to count nothing held", func() bool {
		for _, q := range queues {
			if n := g.Broker.Held(q); n != 0 {
				t.Logf("%s: %d counted as held", q, n)
				return false
			}
		}
		return true
	})
}

// fault records a fault that starts now; end records its end.
func (h *history) fault(kind string) (end func()) {
	h.mu.Lock()
	i := len(h.faults)
	h.faults = append(h.faults, faultWindow{kind: kind, from: time.Now(), to: time.Now().Add(time.Hour)})
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		h.faults[i].to = time.Now().Add(faultAfterglow)
		h.mu.Unlock()
	}
}

func (h *history) randomID(rng *rand.Rand) (idRef, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ids) == 0 {
		return idRef{}, false
	}
	return h.ids[rng.IntN(len(h.ids))], true
}

func (h *history) counts() (ops, handouts int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.events {
		if e.kind == evHandout {
			handouts++
		}
	}
	return len(h.events), handouts
}

// faultBetween reports whether a fault lasted at some time in [from, to].
func (h *history) faultBetween(from, to time.Time) bool {
	for _, f := range h.faults {
		if !f.from.After(to) && !f.to.Before(from) {
			return true
		}
	}
	return false
}

// lastFault tells when the last fault before at began and ended, for a
// failure report.
func (h *history) lastFault(at time.Time) string {
	var last *faultWindow
	for i, f := range h.faults {
		if f.from.Before(at) && (last == nil || f.from.After(last.from)) {
			last = &h.faults[i]
		}
	}
	if last == nil {
		return "no fault before it"
	}
	return fmt.Sprintf("the last fault before it, %s, lasted %s..%s", last.kind, last.from.Format("15:04:05.000"), last.to.Format("15:04:05.000"))
}

// faultsSince counts the faults that lasted at or after from.
func (h *history) faultsSince(from time.Time) int {
	n := 0
	for _, f := range h.faults {
		if !f.to.Before(from) {
			n++
		}
	}
	return n
}

// ---- the checker ----

// msgLife is everything the history says about one message.
type msgLife struct {
	queue     string
	set       *event
	handouts  []event
	acks      []event // acked (the reply said so)
	closes    []event // kestrel /close of it: perhaps acked
	releases  []event // give-backs and disconnects of the holder
	touches   []event // successful lease changes
	drainedIn string
}

// check returns every way the history breaks SPEC §4.
func (h *history) check(qs huntQueues, drained map[string][]string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	sort.SliceStable(h.events, func(i, j int) bool { return h.events[i].at.Before(h.events[j].at) })
	var bad []string
	fail := func(format string, args ...any) {
		if len(bad) < 40 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	msgs := map[string]*msgLife{}
	life := func(body string) *msgLife {
		m := msgs[body]
		if m == nil {
			m = &msgLife{}
			msgs[body] = m
		}
		return m
	}
	// A client's reservations, to give disconnects and touches their
	// message: client → queue → body.
	held := map[int]map[string]string{}
	hold := func(c int) map[string]string {
		if held[c] == nil {
			held[c] = map[string]string{}
		}
		return held[c]
	}
	for i := range h.events {
		e := &h.events[i]
		switch e.kind {
		case evSet:
			m := life(e.body)
			m.set, m.queue = e, e.queue
		case evHandout:
			life(e.body).handouts = append(life(e.body).handouts, *e)
			if !e.peek && !e.auto {
				hold(e.client)[e.queue] = e.body
			}
		case evAck, evClose:
			switch {
			case e.body == "":
			case e.kind == evClose:
				life(e.body).closes = append(life(e.body).closes, *e)
			case e.ok:
				life(e.body).acks = append(life(e.body).acks, *e)
			}
			if e.id == 0 {
				delete(hold(e.client), e.queue)
			}
		case evGiveBack:
			if b := hold(e.client)[e.queue]; b != "" {
				e.body = b
				life(b).releases = append(life(b).releases, *e)
				delete(hold(e.client), e.queue)
			}
		case evTouch:
			if b := hold(e.client)[e.queue]; b != "" && e.ok {
				e.body = b
				life(b).touches = append(life(b).touches, *e)
			}
		case evDisconnect:
			for q, b := range hold(e.client) {
				r := *e
				r.queue, r.body = q, b
				life(b).releases = append(life(b).releases, r)
			}
			held[e.client] = nil
		}
	}
	for q, bodies := range drained {
		for _, b := range bodies {
			m := life(b)
			if m.drainedIn != "" {
				fail("%q drained twice (%s and %s)", b, m.drainedIn, q)
			}
			m.drainedIn = q
		}
	}

	for body, m := range msgs {
		if m.set == nil {
			fail("phantom: %q was handed out or drained but never set", body)
			continue
		}
		if m.set.set == outNotStored {
			if len(m.handouts) > 0 || m.drainedIn != "" {
				fail("%q was NOT_STORED, yet handed out %d times / drained from %q", body, len(m.handouts), m.drainedIn)
			}
			continue
		}
		if m.drainedIn == qs.dead {
			// Dead-lettered: only after the delivery limit was used up
			// by clients that had it (or faults that returned it).
			if n := len(m.releases) + len(m.handouts) - 1 + h.faultsSince(m.set.sent); n < huntDeliveryLimit {
				fail("%q was dead-lettered after %d hand-outs, %d give-backs and %d faults: the limit is %d", body, len(m.handouts), len(m.releases), h.faultsSince(m.set.sent), huntDeliveryLimit)
			}
		}
		gone := m.drainedIn == "" && len(m.acks) == 0 && len(m.closes) == 0 && !autoHanded(m)
		if gone && m.set.set == outStored && m.queue != qs.doomed {
			fail("LOST: %q was STORED to %s at %s, handed out %d times, never acked, not in any queue at the end; %s", body, m.queue, m.set.at.Format("15:04:05.000"), len(m.handouts), m.story())
		}
		h.checkHandouts(body, m, fail)
	}
	h.checkFIFO(fail)
	return bad
}

// story tells a message's hand-outs and give-backs, for a failure report:
// who had it last and what became of it.
func (m *msgLife) story() string {
	var evs []event
	evs = append(evs, m.handouts...)
	evs = append(evs, m.releases...)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	var b strings.Builder
	for i, e := range evs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s by client %d at %s", e.kind, e.client, e.at.Format("15:04:05.000"))
		if e.kind == evHandout && e.peek {
			b.WriteString(" (peek)")
		}
	}
	return b.String()
}

func autoHanded(m *msgLife) bool {
	for _, ho := range m.handouts {
		if ho.auto {
			return true
		}
	}
	return false
}

// checkHandouts: a message is handed out again only after it went back
// (a give-back, a disconnect, a lease that ended) or a fault that could
// have returned it; after an ack or a destructive get, only after a fault
// (a lost ack). A peek hands out no reservation: it may show what its own
// connection holds, or what nobody holds.
func (h *history) checkHandouts(body string, m *msgLife, fail func(string, ...any)) {
	var holder *event // the reservation that holds m, if any
	var last *event   // the last reservation or destructive get
	for i := range m.handouts {
		next := &m.handouts[i]
		if holder != nil && !h.stillHeld(m, holder, next) {
			holder = nil
		}
		if next.peek {
			// Overlapping requests may have run in either order.
			if holder != nil && holder.client != next.client && !next.sent.Before(holder.at) {
				fail("DUPLICATE: %q peeked by client %d at %s while client %d held it since %s\n%s",
					body, next.client, next.at.Format("15:04:05.000"), holder.client, holder.at.Format("15:04:05.000"), h.story(body, m))
			}
			continue
		}
		if last != nil && !h.faultBetween(last.sent, next.at) {
			for _, a := range m.acks {
				if a.sent.After(last.sent) && a.sent.Before(next.at) {
					fail("%q handed out again at %s after it was acked, with no fault in between", body, next.at.Format("15:04:05.000"))
				}
			}
			if last.auto {
				fail("%q handed out again after a destructive (ack: auto) get, with no fault in between", body)
			}
		}
		if holder != nil {
			fail("DUPLICATE: %q handed to client %d at %s while client %d held it since %s, with no give-back or fault\n%s",
				body, next.client, next.at.Format("15:04:05.000"), holder.client, holder.at.Format("15:04:05.000"), h.story(body, m))
		}
		last = next
		holder = nil
		if !next.auto {
			holder = next
		}
	}
}

// stillHeld reports whether the reservation r of m certainly still held
// it when next was handed out: not given back, acked, expired or hit by a
// fault before.
func (h *history) stillHeld(m *msgLife, r, next *event) bool {
	if h.faultBetween(r.sent, next.at) {
		return false
	}
	for _, x := range append(append([]event{}, m.releases...), m.acks...) {
		if x.client == r.client && x.sent.After(r.sent) && x.sent.Before(next.at) {
			return false
		}
	}
	for _, x := range m.closes {
		if x.client == r.client && x.sent.After(r.sent) && x.sent.Before(next.at) {
			return false
		}
	}
	// The lease: from the hand-out or the last touch before next.
	from, lease := r.sent, r.lease
	for _, tc := range m.touches {
		if tc.client == r.client && tc.sent.After(from) && tc.sent.Before(next.at) {
			from, lease = tc.sent, tc.lease
		}
	}
	return !next.at.After(from.Add(lease))
}

// checkFIFO: the FIFO consumer gets the lane's messages in publishing
// order, and after it gives one back, the next get returns that one (unless
// a fault came in between).
func (h *history) checkFIFO(fail func(string, ...any)) {
	seen := map[string]bool{}
	last := -1
	var pending *event // a give-back whose message must come next
	// How each lane message's set ended, for the reports.
	sets := map[string]string{}
	for _, e := range h.events {
		if e.kind == evSet && e.client == fifoClient+1 {
			sets[e.body] = fmt.Sprintf("%s at %s", [...]string{"STORED", "NOT_STORED", "SERVER_ERROR"}[e.set], e.at.Format("15:04:05.000"))
		}
	}
	for i := range h.fifo {
		e := h.fifo[i]
		switch e.kind {
		case evGiveBack, evDisconnect:
			pending = &h.fifo[i]
		case evHandout:
			if pending != nil && !h.faultBetween(pending.sent, e.at) && e.body != pending.body {
				fail("FIFO: after %s gave %q (set: %s) back, the next get returned %q (set: %s); %s\n%s", pending.sent.Format("15:04:05.000"), pending.body, sets[pending.body], e.body, sets[e.body], h.lastFault(e.at), h.fifoStory(i))
			}
			pending = nil
			if seen[e.body] {
				continue
			}
			seen[e.body] = true
			n, _ := strconv.Atoi(e.body[strings.LastIndexByte(e.body, '.')+1:])
			if n < last {
				fail("FIFO: %q (set: %s) first handed out after message %d (set: %s); %s\n%s", e.body, sets[e.body], last, sets[fmt.Sprintf("fifo.%06d", last)], h.lastFault(e.at), h.fifoStory(i))
			}
			last = max(last, n)
		}
	}
}

// fifoStory tells the FIFO lane's events around its i-th: six hand-outs,
// acks or give-backs before it and three after, with the misses and errors
// between them folded into one line per run.
func (h *history) fifoStory(i int) string {
	from, n := i, 0
	for from > 0 && n < 6 {
		from--
		if k := h.fifo[from].kind; k != evMiss && k != evGetError {
			n++
		}
	}
	to := min(len(h.fifo), i+3)
	var b strings.Builder
	for j := from; j < to; j++ {
		x := h.fifo[j]
		if x.kind == evMiss || x.kind == evGetError {
			k := j
			for k+1 < to && h.fifo[k+1].kind == x.kind && h.fifo[k+1].body == x.body {
				k++
			}
			fmt.Fprintf(&b, "   %s..%s %v %q ×%d\n", x.sent.Format("05.000000"), h.fifo[k].at.Format("05.000000"), x.kind, x.body, k-j+1)
			j = k
			continue
		}
		fmt.Fprintf(&b, "   %s..%s %v %q%s\n", x.sent.Format("05.000000"), x.at.Format("05.000000"), x.kind, x.body, map[bool]string{true: " (redelivered)"}[x.redelivered])
	}
	return b.String()
}

// ---- the clients ----

type huntClient struct {
	id   int
	f    framing
	addr string
	qs   huntQueues
	h    *history
	rng  *rand.Rand
	c    *huntConn
	seq  int
	// held: queue → its reservation (hand-out), as this client knows it.
	held map[string]event
}

func (cl *huntClient) redial() error {
	if cl.c != nil {
		cl.c.close()
		cl.h.add(event{kind: evDisconnect, client: cl.id, sent: time.Now(), at: time.Now()})
	}
	c, err := dialHunt(cl.addr, cl.f)
	cl.c, cl.held = c, map[string]event{}
	return err
}

// pick chooses a queue to set to or read from.
func (cl *huntClient) pick(forSet bool) string {
	qs := cl.qs
	choices := []string{qs.healthy, qs.healthy, qs.healthy, qs.full, qs.quorum, qs.quorum, qs.auto, qs.doomed}
	if forSet {
		choices = append(choices, qs.void)
	}
	return choices[cl.rng.IntN(len(choices))]
}

func (cl *huntClient) run(deadline time.Time) (err error) {
	if err := cl.redial(); err != nil {
		return err
	}
	defer func() {
		cl.c.close()
		cl.h.add(event{kind: evDisconnect, client: cl.id, sent: time.Now(), at: time.Now()})
		if err != nil {
			err = fmt.Errorf("client %d (%s): %w", cl.id, cl.f, err)
		}
	}()
	for time.Now().Before(deadline) {
		switch r := cl.rng.IntN(100); {
		case r < 30:
			err = cl.set()
		case r < 58:
			err = cl.get()
		case r < 78:
			err = cl.ack(false)
		case r < 82:
			err = cl.ack(true)
		case r < 87:
			err = cl.giveBack()
		case r < 92:
			err = cl.touch()
		case r < 95:
			err = cl.redial()
		default:
			// Hold what it has for a while: leases run out.
			time.Sleep(time.Duration(cl.rng.IntN(2500)) * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (cl *huntClient) set() error {
	q := cl.pick(true)
	cl.seq++
	body := fmt.Sprintf("c%d-%d", cl.id, cl.seq)
	sent := time.Now()
	out, _, err := cl.c.set(q, body)
	if err != nil {
		return err
	}
	cl.h.add(event{kind: evSet, client: cl.id, queue: q, body: body, set: out, sent: sent, at: time.Now()})
	return nil
}

func (cl *huntClient) get() error {
	q := cl.pick(false)
	key, lease, peek := q, 2*time.Second, false
	leaseArg := 0
	switch r := cl.rng.IntN(100); {
	case r < 15:
		leaseArg = 1 + cl.rng.IntN(3)
		lease = time.Duration(leaseArg) * time.Second
	case r < 22 && cl.f != binaryFraming:
		leaseArg, peek = -1, true // a negative gat: a peek
	case r < 30:
		key, peek = q+"/peek", true
	case r < 40:
		key += "/t=" + strconv.Itoa(cl.rng.IntN(200))
	case r < 46:
		key += "/close/open"
	}
	sent := time.Now()
	ho, err := cl.c.get(key, leaseArg)
	at := time.Now()
	var se serverError
	isServerError := errors.As(err, &se)
	if err != nil && !isServerError {
		return err
	}
	if strings.HasSuffix(key, "/close/open") {
		// The close acks before the open asks the broker: a SERVER_ERROR
		// from the open does not undo it.
		if prev, ok := cl.held[q]; ok {
			cl.h.add(event{kind: evClose, client: cl.id, queue: q, body: prev.body, sent: sent, at: at})
			delete(cl.held, q)
		}
	}
	if isServerError || ho == nil {
		return nil
	}
	e := event{kind: evHandout, client: cl.id, queue: q, body: ho.body, id: ho.cas, lease: lease, peek: peek, auto: q == cl.qs.auto && !peek, sent: sent, at: at}
	cl.h.add(e)
	if !e.peek && !e.auto {
		cl.held[q] = e
	}
	return nil
}

func (cl *huntClient) anyHeld() (string, event, bool) {
	qs := make([]string, 0, len(cl.held))
	for q := range cl.held {
		qs = append(qs, q)
	}
	if len(qs) == 0 {
		return "", event{}, false
	}
	sort.Strings(qs)
	q := qs[cl.rng.IntN(len(qs))]
	return q, cl.held[q], true
}

// ack deletes a reservation this client holds, or byID one any client
// holds (that it learnt the id of).
func (cl *huntClient) ack(byID bool) error {
	var q, body string
	var id uint64
	if byID {
		ref, ok := cl.h.randomID(cl.rng)
		if !ok {
			return nil
		}
		q, id = ref.queue, ref.id
		body = cl.h.bodyOf(ref)
	} else {
		var e event
		var ok bool
		if q, e, ok = cl.anyHeld(); !ok {
			return nil
		}
		body = e.body
	}
	sent := time.Now()
	ok, err := cl.c.del(q, id)
	if err != nil {
		return err
	}
	cl.h.add(event{kind: evAck, client: cl.id, queue: q, body: body, id: id, ok: ok, sent: sent, at: time.Now()})
	if !byID {
		delete(cl.held, q)
	}
	return nil
}

func (h *history) bodyOf(ref idRef) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.events) - 1; i >= 0; i-- {
		if e := h.events[i]; e.kind == evHandout && e.id == ref.id {
			return e.body
		}
	}
	return ""
}

// giveBack returns a reservation at once: /abort or a negative touch
// (binary clients have neither: they drop the connection).
func (cl *huntClient) giveBack() error {
	q, _, ok := cl.anyHeld()
	if !ok {
		return nil
	}
	sent := time.Now()
	switch {
	case cl.f == binaryFraming:
		return cl.redial()
	case cl.rng.IntN(2) == 0:
		if _, err := cl.c.get(q+"/abort", 0); err != nil {
			return err
		}
	default:
		if _, err := cl.c.touch(q, -1); err != nil {
			return err
		}
	}
	cl.h.add(event{kind: evGiveBack, client: cl.id, queue: q, sent: sent, at: time.Now()})
	delete(cl.held, q)
	return nil
}

func (cl *huntClient) touch() error {
	q, _, ok := cl.anyHeld()
	if !ok {
		return nil
	}
	secs := 1 + cl.rng.IntN(4)
	sent := time.Now()
	ok, err := cl.c.touch(q, secs)
	if err != nil {
		return err
	}
	cl.h.add(event{kind: evTouch, client: cl.id, queue: q, lease: time.Duration(secs) * time.Second, ok: ok, sent: sent, at: time.Now()})
	if !ok {
		delete(cl.held, q) // its lease had ended
	}
	return nil
}

// fifoLane is one producer and one consumer on a queue of their own: the
// consumer must see the lane's messages in order, give-backs included.
type fifoLane struct {
	addr string
	q    string
	h    *history
	f    framing
	// One random source each: producer and consumer run at once.
	prodRng, consRng *rand.Rand
	// redeliveries reads the gateway's mcbridge_redelivered_total for the
	// lane's queue. The lane's consumer is the queue's only reader, so the
	// counter grows across one of its gets exactly when the broker flagged
	// that hand-out redelivered: delivered before, to a channel that died.
	// The gateway's own returns of fetched-ahead messages are not flagged.
	redeliveries func() float64
}

const fifoClient = 100

func (l *fifoLane) produce(deadline time.Time) error {
	c, err := dialHunt(l.addr, textFraming)
	if err != nil {
		return err
	}
	defer c.close()
	for n := 0; time.Now().Before(deadline); n++ {
		body := fmt.Sprintf("fifo.%06d", n)
		sent := time.Now()
		out, _, err := c.set(l.q, body)
		if err != nil {
			return fmt.Errorf("fifo producer: %w", err)
		}
		l.h.add(event{kind: evSet, client: fifoClient + 1, queue: l.q, body: body, set: out, sent: sent, at: time.Now()})
		time.Sleep(time.Duration(l.prodRng.IntN(8)) * time.Millisecond)
	}
	return nil
}

func (l *fifoLane) consume(deadline time.Time) error {
	c, err := dialHunt(l.addr, l.f)
	if err != nil {
		return err
	}
	defer func() { c.close() }()
	// The gateway gives a reservation back when it notices the disconnect,
	// or when the lease timer fires: the lane waits for that (its queue's
	// open transactions, which only the lane holds, drop to 0) before its
	// next get, which must then return the message given back.
	ctl, err := mctest.DialConn(l.addr)
	if err != nil {
		return err
	}
	defer ctl.Close()
	givenBack := func() error {
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
			st, err := ctl.Stats("")
			if err != nil {
				return fmt.Errorf("fifo consumer: stats: %w", err)
			}
			if st["queue_"+l.q+"_open_transactions"] == "0" {
				return nil
			}
		}
		return errors.New("fifo consumer: the reservation was not given back within 10s")
	}
	record := func(e event) {
		e.client, e.queue = fifoClient, l.q
		l.h.add(e)
		l.h.noteFIFO(e)
	}
	for time.Now().Before(deadline) {
		sent := time.Now()
		before := l.redeliveries()
		ho, err := c.get(l.q, 1)
		redelivered := l.redeliveries() > before
		var se serverError
		if errors.As(err, &se) {
			l.h.noteFIFO(event{kind: evGetError, body: string(se), sent: sent, at: time.Now()})
			continue
		}
		if err != nil {
			return fmt.Errorf("fifo consumer: %w", err)
		}
		if ho == nil {
			l.h.noteFIFO(event{kind: evMiss, sent: sent, at: time.Now()})
			time.Sleep(5 * time.Millisecond)
			continue
		}
		record(event{kind: evHandout, body: ho.body, id: ho.cas, lease: time.Second, redelivered: redelivered, sent: sent, at: time.Now()})
		sent = time.Now()
		switch r := l.consRng.IntN(100); {
		case r < 70:
			ok, err := c.del(l.q, 0)
			if err != nil {
				return fmt.Errorf("fifo consumer: %w", err)
			}
			record(event{kind: evAck, body: ho.body, ok: ok, sent: sent, at: time.Now()})
		case r < 85 && l.f != binaryFraming:
			ok, err := c.touch(l.q, -1)
			if err != nil {
				return fmt.Errorf("fifo consumer: %w", err)
			}
			if ok {
				record(event{kind: evGiveBack, body: ho.body, sent: sent, at: time.Now()})
			}
		case r < 93:
			c.close()
			if err := givenBack(); err != nil {
				return err
			}
			record(event{kind: evDisconnect, body: ho.body, sent: sent, at: time.Now()})
			if c, err = dialHunt(l.addr, l.f); err != nil {
				return err
			}
		default:
			// Past its one-second lease: the gateway gives it back.
			time.Sleep(time.Second)
			if err := givenBack(); err != nil {
				return err
			}
			record(event{kind: evGiveBack, body: ho.body, sent: sent.Add(time.Second), at: time.Now()})
		}
	}
	return nil
}

// faultInjector breaks things on a seeded schedule.
type faultInjector struct {
	t      *testing.T
	p      *proxy
	g      *testgateway.Gateway
	qs     huntQueues
	h      *history
	rng    *rand.Rand
	counts map[string]int
}

func (fi *faultInjector) summary() string {
	keys := make([]string, 0, len(fi.counts))
	for k := range fi.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, fi.counts[k]))
	}
	return strings.Join(parts, ", ")
}

func (fi *faultInjector) run(deadline time.Time) error {
	fi.counts = map[string]int{}
	for {
		pause := time.Duration(1500+fi.rng.IntN(2500)) * time.Millisecond
		if time.Now().Add(pause).After(deadline) {
			return nil
		}
		time.Sleep(pause)
		kind := [...]string{"cut", "stall", "stuck queue", "broker closes consume", "broker closes publish", "queue deleted"}[fi.rng.IntN(6)]
		fi.counts[kind]++
		end := fi.h.fault(kind)
		switch kind {
		case "cut":
			fi.p.Cut()
			time.Sleep(time.Duration(100+fi.rng.IntN(700)) * time.Millisecond)
			fi.p.Resume()
		case "stall":
			fi.p.Stall()
			time.Sleep(time.Duration(200+fi.rng.IntN(1300)) * time.Millisecond)
			fi.p.Resume()
		case "stuck queue":
			// Confirms that do not come while the link lives: the queue's
			// process hangs (a quorum queue without its majority looks
			// the same). The proxy's dropped confirms are not used here:
			// a stream that lost an ack frame is one no network delivers,
			// and a later basic.nack(multiple) on it would rightly nack
			// what the lost frame had acked.
			resume := testbroker.SuspendQueue(fi.t, fi.qs.healthy)
			time.Sleep(time.Duration(300+fi.rng.IntN(1700)) * time.Millisecond)
			resume()
		case "broker closes consume":
			testbroker.CloseConnections(fi.t, fi.g.Name+" consume")
		case "broker closes publish":
			testbroker.CloseConnections(fi.t, fi.g.Name+" publish")
		case "queue deleted":
			ch, err := testbroker.Dial(fi.t).Channel()
			if err != nil {
				return err
			}
			_, _ = ch.QueueDelete(fi.qs.doomed, false, false, false)
			_ = ch.Close()
		}
		end()
	}
}

// story tells what the history says of body, and what its clients did
// around it, for a failure message.
func (h *history) story(body string, m *msgLife) string {
	var b strings.Builder
	clients := map[int]bool{}
	var from, to time.Time
	for _, e := range m.handouts {
		clients[e.client] = true
		if from.IsZero() || e.sent.Before(from) {
			from = e.sent
		}
		if e.at.After(to) {
			to = e.at
		}
	}
	for _, e := range h.events {
		if !clients[e.client] || e.at.Before(from.Add(-50*time.Millisecond)) || e.sent.After(to.Add(50*time.Millisecond)) {
			continue
		}
		mark := " "
		if e.body == body {
			mark = "*"
		}
		fmt.Fprintf(&b, "   %s %s..%s client %d %v %s %q id=%d lease=%v peek=%v auto=%v ok=%v\n", mark,
			e.sent.Format("05.000000"), e.at.Format("05.000000"), e.client, e.kind, e.queue, e.body, e.id, e.lease, e.peek, e.auto, e.ok)
	}
	return b.String()
}
