package faults

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// ledger records what clients were told, for the at-least-once check.
type ledger struct {
	mu       sync.Mutex
	stored   map[string]bool // STORED
	unknown  map[string]bool // SERVER_ERROR: may or may not be stored
	consumed map[string][]time.Time
	acked    map[string]int // DELETED
	notFound int            // delete of a reservation the gateway dropped
	getErrs  int            // SERVER_ERROR on get
}

func newLedger() *ledger {
	return &ledger{stored: map[string]bool{}, unknown: map[string]bool{}, consumed: map[string][]time.Time{}, acked: map[string]int{}}
}

func (l *ledger) storedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.stored)
}

func (l *ledger) unknownCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.unknown)
}

// missing lists STORED values never consumed.
func (l *ledger) missing() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for v := range l.stored {
		if len(l.consumed[v]) == 0 {
			out = append(out, v)
		}
	}
	return out
}

// check compares the multisets and returns the number of duplicates.
func (l *ledger) check(t *testing.T, firstFault time.Time) (dups int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for v := range l.stored {
		if len(l.consumed[v]) == 0 {
			t.Errorf("STORED message %q was never consumed", v)
		}
	}
	for v, times := range l.consumed {
		if !l.stored[v] && !l.unknown[v] {
			t.Errorf("consumed %q, which no client set", v)
		}
		dups += len(times) - 1
		if len(times) > 1 && times[1].Before(firstFault) {
			t.Errorf("%q was handed out twice before any fault (%v, %v)", v, times[0], times[1])
		}
	}
	return dups
}

// producer sets unique values until stop or n values; it tolerates
// SERVER_ERROR (outcome unknown) and fails on anything else.
func producer(t *testing.T, addr, q string, id, n int, stop *atomic.Bool, l *ledger) error {
	c, err := mctest.DialConn(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := 0; i < n && !stop.Load(); i++ {
		v := fmt.Sprintf("p%d-%d", id, i)
		r, err := c.Set(q, v)
		if err != nil {
			// No reply (the gateway died): the set may have been stored.
			l.mu.Lock()
			l.unknown[v] = true
			l.mu.Unlock()
			return fmt.Errorf("producer %d: %v", id, err)
		}
		l.mu.Lock()
		switch {
		case r == "STORED":
			l.stored[v] = true
		case strings.HasPrefix(r, "SERVER_ERROR "):
			l.unknown[v] = true
		default:
			l.mu.Unlock()
			return fmt.Errorf("producer %d: set: %q", id, r)
		}
		l.mu.Unlock()
		if strings.HasPrefix(r, "SERVER_ERROR ") {
			// A client's retry pause; the broker is away.
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// consumer reserves with kestrel's /t= wait, records the value and deletes
// it. With leave > 0 it drops its connection mid-reservation with that
// probability instead of deleting.
func consumer(addr, q string, stop *atomic.Bool, l *ledger, leave float64, rng *rand.Rand) error {
	c, err := mctest.DialConn(addr)
	if err != nil {
		return err
	}
	defer func() { c.Close() }()
	for !stop.Load() {
		hit, v, err := c.Get(q + "/t=100")
		if err != nil {
			if _, ok := err.(mctest.ReplyError); ok && strings.HasPrefix(err.Error(), "SERVER_ERROR ") {
				l.mu.Lock()
				l.getErrs++
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return fmt.Errorf("consumer get: %v", err)
		}
		if !hit {
			continue
		}
		l.mu.Lock()
		l.consumed[v] = append(l.consumed[v], time.Now())
		l.mu.Unlock()
		if leave > 0 && rng.Float64() < leave {
			// Gone mid-reservation: the gateway must requeue it.
			c.Close()
			if c, err = mctest.DialConn(addr); err != nil {
				return err
			}
			continue
		}
		r, err := c.Delete(q)
		if err != nil {
			return fmt.Errorf("consumer delete: %v", err)
		}
		l.mu.Lock()
		switch r {
		case "DELETED":
			l.acked[v]++
		case "NOT_FOUND":
			l.notFound++
		default:
			l.mu.Unlock()
			return fmt.Errorf("consumer delete: %q", r)
		}
		l.mu.Unlock()
	}
	return nil
}

// load is producers and consumers running against one queue.
type load struct {
	stopProd, stopCons atomic.Bool
	prodWG, consWG     sync.WaitGroup
	errs               chan error
}

// startLoad starts producers that set unique values into q and consumers
// that reserve and delete them, each dropping its connection
// mid-reservation with probability leave (its random source seeded with
// its index and seed). The test's cleanup stops whatever still runs.
func startLoad(t *testing.T, addr, q string, l *ledger, producers, consumers int, leave float64, seed uint64) *load {
	ld := &load{errs: make(chan error, producers+consumers)}
	for i := range producers {
		ld.prodWG.Go(func() { ld.errs <- producer(t, addr, q, i, 1<<30, &ld.stopProd, l) })
	}
	for i := range consumers {
		ld.consWG.Go(func() { ld.errs <- consumer(addr, q, &ld.stopCons, l, leave, rand.New(rand.NewPCG(uint64(i), seed))) })
	}
	t.Cleanup(func() {
		ld.stopProd.Store(true)
		ld.stopCons.Store(true)
		ld.prodWG.Wait()
		ld.consWG.Wait()
	})
	return ld
}

// finish stops the producers, waits up to within for every STORED message
// to be consumed, stops the consumers and fails the test with any error
// they returned.
func (ld *load) finish(t *testing.T, l *ledger, within time.Duration) {
	t.Helper()
	ld.stopProd.Store(true)
	ld.prodWG.Wait()
	testbroker.Eventually(t, within, "every STORED message to be consumed", func() bool { return len(l.missing()) == 0 })
	ld.stopCons.Store(true)
	ld.consWG.Wait()
	close(ld.errs)
	for err := range ld.errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// Sixteen clients produce and consume while the AMQP connections are cut
// several times: every STORED message is consumed at least once,
// duplicates appear only after faults and are counted, and the gateway
// recovers after each cut.
func TestLoadWithConnectionCuts(t *testing.T) {
	p := startProxy(t, testbroker.Addr, "", nil)
	g := testgateway.Start(t, nil, testgateway.Options{URLs: []string{proxyURL(p)}})
	q := testbroker.Name(t, "q")
	l := newLedger()

	const producers, consumers, cuts = 8, 8, 3
	ld := startLoad(t, g.Addr, q, l, producers, consumers, 0, 1)

	var firstFault time.Time
	for i := range cuts {
		base := l.storedCount()
		testbroker.Eventually(t, 20*time.Second, "sets to flow", func() bool { return l.storedCount() >= base+300 })
		p.Cut()
		if i == 0 {
			firstFault = time.Now()
		}
		cutAt := time.Now()
		testbroker.Eventually(t, 5*time.Second, "the gateway to notice", func() bool { return g.Broker.Ready() != nil })
		noticed := time.Since(cutAt)
		unknown := l.unknownCount()
		// Down until every producer has seen it a few times.
		testbroker.Eventually(t, 10*time.Second, "sets to fail while down", func() bool { return l.unknownCount() >= unknown+20*producers })
		p.Resume()
		up := time.Now()
		ready := g.WaitReady(15 * time.Second)
		stored := l.storedCount()
		testbroker.Eventually(t, 15*time.Second, "sets to succeed again", func() bool { return l.storedCount() > stored })
		t.Logf("cut %d: noticed in %v; down %v; ready %v and storing %v after the network came back",
			i+1, noticed.Round(time.Millisecond), up.Sub(cutAt).Round(time.Millisecond), ready.Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
	}
	base := l.storedCount()
	testbroker.Eventually(t, 20*time.Second, "sets to flow after the last cut", func() bool { return l.storedCount() >= base+200 })
	ld.finish(t, l, 60*time.Second)
	// What is left are messages whose set got SERVER_ERROR yet were stored,
	// and deliveries that consumers had not deleted when they stopped.
	c := mctest.MustDialConn(t, g.Addr)
	for v, n := range mctest.Drain(t, c, q) {
		l.consumed[v] = append(l.consumed[v], make([]time.Time, n)...)
		for j := range n {
			l.consumed[v][len(l.consumed[v])-n+j] = time.Now()
		}
	}
	dups := l.check(t, firstFault)
	redelivered := g.Metric("mcbridge_redelivered_total")
	t.Logf("%d STORED, %d SERVER_ERROR on set (%d of them stored after all), %d distinct consumed; %d duplicates after %d cuts; %d late deletes NOT_FOUND; %d get SERVER_ERRORs; mcbridge_redelivered_total %v",
		len(l.stored), len(l.unknown), countStoredUnknown(l), len(l.consumed), dups, cuts, l.notFound, l.getErrs, redelivered)
	if float64(dups) > redelivered {
		t.Errorf("%d duplicates but only %v counted as redelivered", dups, redelivered)
	}
}

func countStoredUnknown(l *ledger) int {
	n := 0
	for v := range l.unknown {
		if len(l.consumed[v]) > 0 {
			n++
		}
	}
	return n
}

// soakDuration bounds the soak test; MCBRIDGE_SOAK (a Go duration) makes it
// longer outside CI.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("MCBRIDGE_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("MCBRIDGE_SOAK: %v", err)
		}
		return d
	}
	return 10 * time.Second
}

// A bounded soak: producers and consumers run while consumers randomly
// drop their connection mid-reservation. Every STORED message is acked
// exactly once in the end (a dropped reservation goes back, nothing acked
// comes back), and the gateway holds nothing afterwards.
func TestSoakRandomDisconnects(t *testing.T) {
	g := testgateway.Start(t, nil, testgateway.Options{})
	q := testbroker.Name(t, "q")
	l := newLedger()
	ld := startLoad(t, g.Addr, q, l, 4, 8, 0.3, 2)
	d := soakDuration(t)
	deadline := time.NewTimer(d)
	<-deadline.C
	ld.finish(t, l, 30*time.Second)
	c := mctest.MustDialConn(t, g.Addr)
	left := mctest.Drain(t, c, q)
	l.mu.Lock()
	for v, n := range left {
		l.acked[v] += n
	}
	ackDups, unacked := 0, 0
	for v := range l.stored {
		switch n := l.acked[v]; {
		case n == 0:
			unacked++
			t.Errorf("STORED %q was never acked", v)
		case n > 1:
			ackDups++
			t.Errorf("%q was acked %d times: an acked message came back", v, n)
		}
	}
	handouts := 0
	for _, times := range l.consumed {
		handouts += len(times)
	}
	l.mu.Unlock()
	if len(l.unknown) > 0 {
		t.Errorf("%d sets failed without any broker fault", len(l.unknown))
	}
	requeued := g.Metric("mcbridge_requeued_total", "reason", "disconnect")
	t.Logf("soak %v: %d STORED, %d handed out, %d requeued on disconnect, %d redelivered",
		d, len(l.stored), handouts, int(requeued), int(g.Metric("mcbridge_redelivered_total")))
	st, err := c.Stats("")
	if err != nil {
		t.Fatal(err)
	}
	if st["curr_connections"] != "1" || st["queue_"+q+"_open_transactions"] != "0" {
		t.Errorf("after the soak: curr_connections %s, open transactions %s; want 1 and 0", st["curr_connections"], st["queue_"+q+"_open_transactions"])
	}
}
