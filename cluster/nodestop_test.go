package cluster

import (
	"fmt"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// ledger records what clients were told, for the at-least-once check.
type ledger struct {
	mu      sync.Mutex
	stored  map[string]int  // STORED, by the gateway that stored it
	unknown map[string]bool // SERVER_ERROR: may or may not be stored
	// notStored: NOT_STORED, the broker nacked it (a quorum queue may
	// while its leader moves): it must never be handed out.
	notStored map[string]bool
	consumed  map[string][]handout // every hand-out
	notFound  int                  // delete of a reservation the gateway had dropped
	getErrs   int                  // SERVER_ERROR on get
	setErrs   map[string]int       // SERVER_ERROR reasons on set
	perGW     [3]gwProgress        // progress per gateway
	// exits: the errors that ended a client before the load stopped.
	exits []error
	// unconsumed counts the STORED values not handed out yet, kept as
	// values are stored and consumed: counting them over the maps while
	// the consumers wait for the lock starved them under -race.
	unconsumed int
}

// gwProgress is what one gateway's clients did: STORED sets, hand-outs,
// SERVER_ERROR replies to sets and gets, and gets that missed.
type gwProgress struct{ set, got, setErr, getErr, miss int }

type handout struct {
	at time.Time
	gw int // -1: the final drain
}

func newLedger() *ledger {
	return &ledger{stored: map[string]int{}, unknown: map[string]bool{}, notStored: map[string]bool{}, consumed: map[string][]handout{}, setErrs: map[string]int{}}
}

// exited records the error that ended a client, if any, and returns it.
func (l *ledger) exited(err error) error {
	if err != nil {
		l.mu.Lock()
		l.exits = append(l.exits, err)
		l.mu.Unlock()
	}
	return err
}

// progress is what gateway gw's clients did so far.
func (l *ledger) progress(gw int) gwProgress {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perGW[gw]
}

func (l *ledger) missing() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unconsumed
}

// consume records a hand-out of v; l.mu is held.
func (l *ledger) consumeLocked(v string, h handout) {
	if _, stored := l.stored[v]; stored && len(l.consumed[v]) == 0 {
		l.unconsumed--
	}
	l.consumed[v] = append(l.consumed[v], h)
}

// maxBacklog bounds the STORED messages not yet consumed while the load runs.
const maxBacklog = 3000

// producer sets unique values through gateway gw until stop; SERVER_ERROR
// (outcome unknown) and NOT_STORED (nacked by the broker) are tolerated,
// anything else but STORED is an error.
func producer(addr string, gw, id int, stop *atomic.Bool, l *ledger, q string) error {
	c, err := mctest.DialConn(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := 0; !stop.Load(); i++ {
		// Keep the backlog bounded: gets of a quorum queue are a
		// basic.get each (never fetched ahead), slower than confirmed
		// publishes, and this test is about failover, not throughput; an
		// unbounded backlog (100,000 messages in a quiet run) only made
		// the drain outlast its deadline.
		for l.missing() > maxBacklog && !stop.Load() {
			time.Sleep(time.Millisecond)
		}
		v := fmt.Sprintf("g%d-p%d-%d", gw, id, i)
		r, err := c.Set(q, v)
		if err != nil {
			return fmt.Errorf("producer %d on gateway %d: %v", id, gw, err)
		}
		l.mu.Lock()
		switch {
		case r == "STORED":
			l.stored[v] = gw
			if len(l.consumed[v]) == 0 {
				l.unconsumed++
			}
			l.perGW[gw].set++
		case strings.HasPrefix(r, "SERVER_ERROR "):
			l.unknown[v] = true
			l.setErrs[r]++
			l.perGW[gw].setErr++
		case r == "NOT_STORED":
			l.notStored[v] = true
			l.setErrs[r]++
			l.perGW[gw].setErr++
		default:
			l.mu.Unlock()
			return fmt.Errorf("producer %d on gateway %d: set: %q", id, gw, r)
		}
		l.mu.Unlock()
		if r != "STORED" {
			time.Sleep(5 * time.Millisecond) // a client's retry pause
		}
	}
	return nil
}

// consumer reserves with kestrel's /t= wait through gateway gw, records the
// value and deletes it.
func consumer(addr string, gw int, stop *atomic.Bool, l *ledger, q string) error {
	c, err := mctest.DialConn(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	for !stop.Load() {
		hit, v, err := c.Get(q + "/t=100")
		if err != nil {
			if re, ok := err.(mctest.ReplyError); ok && strings.HasPrefix(string(re), "SERVER_ERROR ") {
				l.mu.Lock()
				l.getErrs++
				l.perGW[gw].getErr++
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return fmt.Errorf("consumer on gateway %d: get: %v", gw, err)
		}
		if !hit {
			l.mu.Lock()
			l.perGW[gw].miss++
			l.mu.Unlock()
			continue
		}
		l.mu.Lock()
		l.consumeLocked(v, handout{at: time.Now(), gw: gw})
		l.perGW[gw].got++
		l.mu.Unlock()
		r, err := c.Delete(q)
		if err != nil {
			return fmt.Errorf("consumer on gateway %d: delete: %v", gw, err)
		}
		switch r {
		case "DELETED":
		case "NOT_FOUND":
			l.mu.Lock()
			l.notFound++
			l.mu.Unlock()
		default:
			return fmt.Errorf("consumer on gateway %d: delete: %q", gw, r)
		}
	}
	return nil
}

// waitProgress waits until gateway gw has stored and handed out n more
// messages than when it was called, and returns how long that took.
func waitProgress(t *testing.T, l *ledger, gw, n int, within time.Duration, what string) time.Duration {
	t.Helper()
	p0 := l.progress(gw)
	start := time.Now()
	for {
		p := l.progress(gw)
		if p.set >= p0.set+n && p.got >= p0.got+n {
			return time.Since(start)
		}
		if time.Since(start) > within {
			// What the clients of the gateway saw meanwhile says which
			// side stalled, and how.
			l.mu.Lock()
			reasons, exits := fmt.Sprint(l.setErrs), fmt.Sprint(l.exits)
			l.mu.Unlock()
			t.Logf("goroutines of the gateways and clients:\n%s", gatewayStacks())
			t.Fatalf("timed out after %v waiting for %d sets and gets through gateway %d (%s): meanwhile %d sets STORED, %d SERVER_ERROR; %d gets handed out, %d SERVER_ERROR, %d misses; %d STORED messages not handed out; set errors so far: %s; clients ended by an error: %s",
				within, n, gw, what, p.set-p0.set, p.setErr-p0.setErr, p.got-p0.got, p.getErr-p0.getErr, p.miss-p0.miss, l.missing(), reasons, exits)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Sixteen clients (8 producers, 8 consumers) work through two gateways on
// a quorum queue while one RabbitMQ node is stopped (stop_app) and
// started again. No STORED message is lost, duplicates appear only after
// the fault and are all counted as redeliveries, the gateways fail over by
// themselves, readiness goes false exactly for the gateways that had a
// connection on the stopped node and true again, a gateway started while
// the node is down comes up on the others, and after the node rejoined the
// gateways use it again.
func TestNodeStopUnderLoad(t *testing.T) {
	q := queueName(t, "load")
	cfg := clusterConfig(t, fmt.Sprintf("queues:\n  - name: %s\n    type: quorum\n", q))
	gws := []*gateway{startGateway(t, cfg, "load-g0"), startGateway(t, cfg, "load-g1")}

	// Stop the node that holds most of the gateways' connections.
	conns := connections(t, nodes[0])
	count := map[*node]int{}
	onNode := map[*gateway]map[string]*node{}
	for _, g := range gws {
		onNode[g] = g.nodesOf(conns)
		for _, n := range onNode[g] {
			count[n]++
		}
		t.Logf("%s: %s", g.Name, describeNodes(onNode[g]))
	}
	// The target: the queue's leader when a gateway connection is on it
	// (its loss forces a leader election under load), else the node with
	// the most gateway connections.
	qi := listQueues(t, nodes[0])[q]
	var target *node
	for _, n := range nodes {
		if target == nil || count[n] > count[target] {
			target = n
		}
	}
	for _, n := range nodes {
		if n.name == qi.Leader && count[n] > 0 {
			target = n
		}
	}
	via := runningNode(target)
	leaderStopped := qi.Leader == target.name
	t.Logf("queue %s: %s, leader %s; stopping %s (%d gateway connections)", q, qi.Type, qi.Leader, target.name, count[target])
	affected := map[*gateway]bool{}
	for _, g := range gws {
		for _, n := range onNode[g] {
			if n == target {
				affected[g] = true
			}
		}
		g.pollReady()
	}

	l := newLedger()
	const producers, consumers = 8, 8
	var stopProd, stopCons atomic.Bool
	errs := make(chan error, producers+consumers)
	var prodWG, consWG sync.WaitGroup
	loadStart := time.Now()
	for i := range producers {
		gw := i % 2
		prodWG.Go(func() { errs <- l.exited(producer(gws[gw].Addr, gw, i, &stopProd, l, q)) })
	}
	for i := range consumers {
		gw := i % 2
		consWG.Go(func() { errs <- l.exited(consumer(gws[gw].Addr, gw, &stopCons, l, q)) })
	}
	stopAll := func() {
		stopProd.Store(true)
		stopCons.Store(true)
		prodWG.Wait()
		consWG.Wait()
	}
	t.Cleanup(stopAll)
	for gw := range gws {
		waitProgress(t, l, gw, 150, 30*time.Second, "before the fault")
	}

	// The fault.
	stopAt := time.Now()
	if _, err := ctl(target.name, "stop_app"); err != nil {
		t.Fatalf("stop %s: %v", target.name, err)
	}
	t.Logf("%s stopped (stop_app took %v)", target.name, time.Since(stopAt).Round(time.Millisecond))
	for _, g := range gws {
		if affected[g] {
			testbroker.Eventually(t, 30*time.Second, g.Name+" to notice that "+target.name+" is gone", func() bool {
				for _, ev := range g.rec.snapshot() {
					if !ev.up && ev.at.After(stopAt) {
						return true
					}
				}
				return false
			})
			g.WaitReady(30 * time.Second)
		}
	}
	for gw := range gws {
		took := waitProgress(t, l, gw, 100, 60*time.Second, "after the node stopped")
		t.Logf("gateway %d: 100 more sets and gets %v after the failover", gw, took.Round(time.Millisecond))
	}
	// A gateway started while a node is down comes up on the others.
	g3 := startGatewayNoWait(t, cfg, "load-g2-while-down")
	took := g3.WaitReady(30 * time.Second)
	conns = connections(t, via)
	for role, n := range g3.nodesOf(conns) {
		if n == target {
			t.Errorf("%s: connection %s on the stopped node", g3.Name, role)
		}
	}
	t.Logf("%s started while %s is down: ready after %v (%s)", g3.Name, target.short, took.Round(time.Millisecond), describeNodes(g3.nodesOf(conns)))
	for _, g := range gws {
		for role, n := range g.nodesOf(conns) {
			if n == target || n == nil {
				t.Errorf("%s: connection %s still on %v", g.Name, role, n)
			}
		}
	}
	qd := listQueues(t, via)[q]
	t.Logf("queue while %s is down: leader %s, online %v", target.short, qd.Leader, qd.Online)
	downPhaseEnd := time.Now()

	// The node comes back and rejoins.
	if _, err := ctl(target.name, "start_app"); err != nil {
		t.Fatalf("start %s: %v", target.name, err)
	}
	if err := awaitStartup(target, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := awaitRunning(via, len(nodes), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	testbroker.Eventually(t, 30*time.Second, "the queue's replica on "+target.short+" to be online again", func() bool {
		return len(listQueues(t, via)[q].Online) == len(nodes)
	})
	t.Logf("%s rejoined %v after it was stopped", target.short, time.Since(stopAt).Round(time.Millisecond))

	// Connections do not move back by themselves; the next time one is
	// lost it walks amqp.urls, and the rejoined node is in the rotation.
	// Close gateway 0's connections until they all sit on the target.
	moved := moveTo(t, gws[0], target, via)
	waitProgress(t, l, 0, 100, 60*time.Second, "with every connection on the rejoined node")
	conns = connections(t, via)
	t.Logf("gateway 0 moved to %s in %d rounds and keeps working: %s", target.short, moved, describeNodes(gws[0].nodesOf(conns)))

	// Drain.
	stopProd.Store(true)
	prodWG.Wait()
	loadTime := time.Since(loadStart)
	// Not Eventually: when the consumers stall, the drain below and the
	// checks after it still say which messages are where.
	// The consumers must keep making progress: 30s without one more
	// message consumed while some are missing is a stall.
	last, lastAt := l.missing(), time.Now()
	for n := last; n > 0 && time.Since(lastAt) < 30*time.Second; n = l.missing() {
		if n < last {
			last, lastAt = n, time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := l.missing(); n > 0 {
		t.Errorf("the consumers stalled for 30s with %d STORED messages not received; queue %s: %+v", n, q, listQueues(t, via)[q])
	}
	stopCons.Store(true)
	consWG.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// What is left: stored SERVER_ERROR sets and deliveries the consumers
	// had not deleted when they stopped.
	d := mctest.MustDialConn(t, gws[1].Addr)
	left := 0
	for range 1_000_000 {
		hit, v, err := d.Get(q + "/t=300")
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
		if !hit {
			break
		}
		left++
		l.consumed[v] = append(l.consumed[v], handout{at: time.Now(), gw: -1})
		want(t, "drain delete", func() (string, error) { return d.Delete(q) }, "DELETED")
	}

	// The multisets: every STORED value consumed at least once; nothing
	// consumed that nobody set; a second hand-out only after the fault.
	dups, cross, storedUnknown := 0, 0, 0
	for v, gw := range l.stored {
		hs := l.consumed[v]
		if len(hs) == 0 {
			t.Errorf("STORED message %q was never consumed", v)
			continue
		}
		if hs[0].gw >= 0 && hs[0].gw != gw {
			cross++
		}
	}
	for v, hs := range l.consumed {
		if _, ok := l.stored[v]; !ok {
			switch {
			case l.notStored[v]:
				t.Errorf("consumed %q, which the gateway answered NOT_STORED", v)
			case !l.unknown[v]:
				t.Errorf("consumed %q, which no client set", v)
			}
			storedUnknown++
		}
		dups += len(hs) - 1
		if len(hs) > 1 && hs[1].at.Before(stopAt) {
			t.Errorf("%q was handed out twice before any fault (%v, %v)", v, hs[0].at, hs[1].at)
		}
	}
	redelivered := 0.0
	for _, g := range append(gws, g3) {
		redelivered += g.Metric("mcbridge_redelivered_total")
	}
	if float64(dups) > redelivered {
		t.Errorf("%d duplicates but only %v hand-outs counted as redelivered", dups, redelivered)
	}
	if cross == 0 {
		t.Errorf("no message stored through one gateway was consumed through the other")
	}

	// Readiness told the truth: every connection that went down made Ready
	// (what /readyz serves) say so at that instant; the gateways that had a
	// connection on the stopped node went not ready, all were ready again
	// within seconds and at the end. Connections on other nodes stay up,
	// except that RabbitMQ 3.x answers a basic.get on a quorum queue that
	// lost its leader with a connection error (541 INTERNAL_ERROR …
	// noproc): consume connections elsewhere may drop until a new leader is
	// elected.
	for _, g := range gws {
		g.stopPolling()
		var downs, elsewhere []string
		pollFalse := 0
		var outage time.Duration // longest stretch Ready() was polled false
		var since, lastDown, settled time.Time
		for _, ev := range g.pollEvents() {
			if ev.at.Before(stopAt) || ev.at.After(downPhaseEnd) {
				continue
			}
			if !ev.ready {
				pollFalse++
				since = ev.at
			} else if !since.IsZero() {
				outage = max(outage, ev.at.Sub(since))
				since, settled = time.Time{}, ev.at
			}
		}
		for _, ev := range g.rec.snapshot() {
			if !ev.at.After(stopAt) || !ev.at.Before(downPhaseEnd) {
				continue
			}
			role := fmt.Sprintf("%s %d", ev.role, ev.index)
			if ev.up {
				settled = maxTime(settled, ev.at)
				continue
			}
			lastDown = ev.at
			downs = append(downs, role)
			if ev.readyNil {
				t.Errorf("%s: connection %s went down but Ready said ready", g.Name, role)
			}
			if onNode[g][role] != target {
				elsewhere = append(elsewhere, role+": "+ev.readyText)
				if !leaderStopped {
					t.Errorf("%s: connection %s on %v went down when %s (not the queue leader) stopped: %s", g.Name, role, onNode[g][role], target.short, ev.readyText)
				}
			}
		}
		if affected[g] && len(downs) == 0 {
			t.Errorf("%s had a connection on %s but never reported not ready", g.Name, target.short)
		}
		if settled.Before(lastDown) {
			t.Errorf("%s: down at %v and never up again during the fault", g.Name, lastDown)
		}
		if !settled.IsZero() && settled.Sub(stopAt) > 20*time.Second {
			t.Errorf("%s settled only %v after stop_app", g.Name, settled.Sub(stopAt))
		}
		if err := g.Broker.Ready(); err != nil {
			t.Errorf("%s not ready at the end: %v", g.Name, err)
		}
		settledAfter := "never down"
		if !settled.IsZero() {
			settledAfter = settled.Sub(stopAt).Round(time.Millisecond).String()
		}
		t.Logf("%s: had a connection on %s: %v; connections down %v; Ready() polled false %d times, longest %v; ready for good %s after stop_app began; reconnects %v",
			g.Name, target.short, affected[g], downs, pollFalse, outage.Round(time.Millisecond), settledAfter, g.Metric("mcbridge_amqp_reconnects_total"))
		for _, e := range elsewhere {
			t.Logf("  %s: dropped by a node that stayed up: %s", g.Name, e)
		}
	}
	t.Logf("load: %v, %.0f STORED/s through the two gateways", loadTime.Round(time.Millisecond), float64(len(l.stored))/loadTime.Seconds())
	t.Logf("%d STORED (%d through gateway 0, %d through gateway 1), %d SERVER_ERROR on set (%d of them stored after all: %v), %d consumed through the other gateway; "+
		"%d duplicates (all after the fault), mcbridge_redelivered_total %v; %d late deletes NOT_FOUND; %d get SERVER_ERRORs; %d left in the queue at the end",
		len(l.stored), l.perGW[0].set, l.perGW[1].set, len(l.unknown), storedUnknown, l.setErrs, cross, dups, redelivered, l.notFound, l.getErrs, left)
}

// moveTo closes the gateway's connections that are not on target until all
// of them are: a closed connection reconnects to the next node of
// amqp.urls, so those on the node before target go there at once, and
// those after it go round. It returns the rounds it took.
func moveTo(t *testing.T, g *gateway, target, via *node) int {
	t.Helper()
	ti := 0
	for i, n := range nodes {
		if n == target {
			ti = i
		}
	}
	prev := nodes[(ti+len(nodes)-1)%len(nodes)]
	for round := 0; round < 2*len(nodes); round++ {
		mine := g.connsIn(connections(t, via))
		if len(mine) != 1+g.Config.AMQP.ConsumeConnections {
			t.Fatalf("%s: %d connections listed, want %d", g.Name, len(mine), 1+g.Config.AMQP.ConsumeConnections)
		}
		var onPrev, elsewhere []brokerConn
		for _, c := range mine {
			switch nodeByPort(c.Port) {
			case target:
			case prev:
				onPrev = append(onPrev, c)
			default:
				elsewhere = append(elsewhere, c)
			}
		}
		if len(onPrev)+len(elsewhere) == 0 {
			return round
		}
		close := onPrev
		if len(close) == 0 {
			close = elsewhere
		}
		for _, c := range close {
			if c.Pid == "" {
				t.Fatalf("no pid for connection %q", c.Name)
			}
			if _, err := ctl(via.name, "close_connection", c.Pid, "mcbridge cluster test: move to "+target.short); err != nil {
				t.Fatalf("close %s: %v", c.Name, err)
			}
		}
		testbroker.Eventually(t, 30*time.Second, g.Name+" to reconnect", func() bool {
			if g.Broker.Ready() != nil {
				return false
			}
			for _, c := range g.connsIn(connections(t, via)) {
				for _, old := range close {
					if c.PeerPort == old.PeerPort {
						return false
					}
				}
			}
			return true
		})
	}
	t.Fatalf("%s: connections not all on %s after %d rounds", g.Name, target.short, 2*len(nodes))
	return 0
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// gatewayStacks is the goroutine profile (stacks grouped, with counts),
// keeping the groups that run mcbridge code: where a gateway that stopped
// making progress waits.
func gatewayStacks() string {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	var keep []string
	for _, group := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(group, "mcbridge/amqp") || strings.Contains(group, "mcbridge/bridge") {
			keep = append(keep, group)
		}
	}
	return strings.Join(keep, "\n\n")
}
