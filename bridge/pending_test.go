package bridge

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// acquireAsync starts an acquire and returns a channel that yields its ok.
func acquireAsync(p *pendingBytes, n int64, stop <-chan struct{}) <-chan bool {
	done := make(chan bool, 1)
	go func() {
		ok, _ := p.acquire(n, stop, nil)
		done <- ok
	}()
	return done
}

// waitersOf reports how many acquires wait, for polling.
func waitersOf(p *pendingBytes) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting)
}

func mustWaiters(t *testing.T, p *pendingBytes, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for waitersOf(p) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want %d", waitersOf(p), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustGet(t *testing.T, c <-chan bool, want bool) {
	t.Helper()
	select {
	case ok := <-c:
		if ok != want {
			t.Fatalf("acquire returned %v, want %v", ok, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("acquire still waiting")
	}
}

func mustWait(t *testing.T, c <-chan bool) {
	t.Helper()
	select {
	case ok := <-c:
		t.Fatalf("acquire returned %v, want it to wait", ok)
	default:
	}
}

// The pending-bytes budget: values fit up to the limit, then wait in
// arrival order (a large one is not passed by small ones), a value larger
// than the room left goes as soon as nothing else is pending (never a
// deadlock, whatever its size), and a waiter that gives up lets the next
// one in. The gauge follows.
func TestPendingBytesBudget(t *testing.T) {
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	p := newPendingBytes(10, gauge)
	never := make(chan struct{})

	if ok, waited := p.acquire(6, never, nil); !ok || waited {
		t.Fatalf("first acquire: ok=%v waited=%v, want no wait", ok, waited)
	}
	if ok, waited := p.acquire(4, never, nil); !ok || waited {
		t.Fatalf("acquire up to the limit: ok=%v waited=%v, want no wait", ok, waited)
	}
	if v := toFloat64(gauge); v != 10 {
		t.Fatalf("gauge %v, want 10", v)
	}

	// Full: a large value waits first, a small one behind it.
	big := acquireAsync(p, 8, never)
	mustWaiters(t, p, 1)
	small := acquireAsync(p, 1, never)
	mustWaiters(t, p, 2)
	p.release(4) // room for the small one, but the big one is first
	mustWait(t, big)
	mustWait(t, small)
	p.release(6) // empty: the big one goes, and the small one fits after it
	mustGet(t, big, true)
	mustGet(t, small, true)
	if used, _ := p.stats(); used != 9 {
		t.Fatalf("used %d, want 9", used)
	}
	p.release(9)

	// Larger than the whole limit: admitted as soon as nothing is pending.
	if ok, waited := p.acquire(25, never, nil); !ok || waited {
		t.Fatalf("oversize value with nothing pending: ok=%v waited=%v", ok, waited)
	}
	if ok, waited := p.acquire(1, closedChan(), nil); ok || !waited {
		t.Fatalf("acquire with stop closed while full: ok=%v waited=%v, want false, true", ok, waited)
	}
	mustWaiters(t, p, 0)
	p.release(25)
	p.acquire(5, never, nil)
	huge := acquireAsync(p, 25, never)
	mustWaiters(t, p, 1)
	p.release(5)
	mustGet(t, huge, true)

	// A waiter that gives up lets the one behind it in.
	p.release(25)
	p.acquire(8, never, nil)
	stop := make(chan struct{})
	quitter := acquireAsync(p, 5, stop)
	mustWaiters(t, p, 1)
	next := acquireAsync(p, 1, never) // fits, but waits behind the quitter
	mustWaiters(t, p, 2)
	mustWait(t, next)
	close(stop)
	mustGet(t, quitter, false)
	mustGet(t, next, true)
	p.release(9)

	p.acquire(10, never, nil)
	stop2 := make(chan struct{})
	q2 := acquireAsync(p, 5, stop2)
	mustWaiters(t, p, 1)
	close(stop2)
	mustGet(t, q2, false)
	mustWaiters(t, p, 0)
	if used, peak := p.stats(); used != 10 || peak != 25 {
		t.Fatalf("used %d peak %d, want 10 and 25", used, peak)
	}
	p.release(10)
	if v := toFloat64(gauge); v != 0 {
		t.Fatalf("gauge %v at the end, want 0", v)
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
