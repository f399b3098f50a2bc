package bridge

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// pendingBytes bounds the bytes of values read from clients whose publish
// has no verdict yet, all connections together (limits.max_pending_bytes).
// A connection about to read a value first acquires its size, and releases
// it once the command is answered; while the budget is spent it waits
// before reading, so the client's bytes stay in the socket: back-pressure
// through TCP, never an error and never a dropped message.
//
// Waiters are served in arrival order, so a large value is not starved by
// small ones slipping past it, and a value is admitted whenever nothing
// else is pending, whatever its size: no value can wait forever. Since a
// connection releases what it holds before it reads its next command,
// nobody waits while holding: the budget cannot deadlock. What is pending
// is therefore at most the limit, or one value when it alone is larger.
type pendingBytes struct {
	limit int64
	gauge prometheus.Gauge

	mu      sync.Mutex
	used    int64          // guarded by mu
	peak    int64          // guarded by mu; the highest used, for tests and figures
	waiting []*pendingWait // guarded by mu; in arrival order
}

// pendingWait is one connection waiting for room; ready is closed once its
// bytes are counted in used.
type pendingWait struct {
	n     int64
	ready chan struct{}
}

func newPendingBytes(limit int64, gauge prometheus.Gauge) *pendingBytes {
	return &pendingBytes{limit: limit, gauge: gauge}
}

// acquire counts n bytes as pending, waiting for room first when there is
// none; beforeWait (if not nil) runs once it is clear that it must wait.
// waited says whether it had to. It gives up when stop closes: ok is then
// false and nothing is counted.
func (p *pendingBytes) acquire(n int64, stop <-chan struct{}, beforeWait func()) (ok, waited bool) {
	p.mu.Lock()
	if len(p.waiting) == 0 && p.fitsLocked(n) {
		p.addLocked(n)
		p.mu.Unlock()
		return true, false
	}
	w := &pendingWait{n: n, ready: make(chan struct{})}
	p.waiting = append(p.waiting, w)
	p.mu.Unlock()
	if beforeWait != nil {
		beforeWait()
	}

	select {
	case <-w.ready:
		return true, true
	case <-stop:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-w.ready:
		// Granted as we gave up: hand the room back.
		p.addLocked(-n)
	default:
		for i, o := range p.waiting {
			if o == w {
				p.waiting = append(p.waiting[:i], p.waiting[i+1:]...)
				break
			}
		}
	}
	// We may have been the head that the others waited behind.
	p.grantLocked()
	return false, true
}

// release uncounts n bytes acquired before, and admits the waiters that now
// fit.
func (p *pendingBytes) release(n int64) {
	if n == 0 {
		return
	}
	p.mu.Lock()
	p.addLocked(-n)
	p.grantLocked()
	p.mu.Unlock()
}

// fitsLocked: n bytes may be added now. A value larger than the room left
// still goes when nothing else is pending. A limit of 0 (which a validated
// config never has) bounds nothing.
func (p *pendingBytes) fitsLocked(n int64) bool {
	return p.limit <= 0 || p.used == 0 || p.used+n <= p.limit
}

func (p *pendingBytes) addLocked(n int64) {
	p.used += n
	p.peak = max(p.peak, p.used)
	p.gauge.Set(float64(p.used))
}

// grantLocked admits waiters in order while the first one fits.
func (p *pendingBytes) grantLocked() {
	for len(p.waiting) > 0 && p.fitsLocked(p.waiting[0].n) {
		w := p.waiting[0]
		p.waiting[0] = nil
		p.waiting = p.waiting[1:]
		p.addLocked(w.n)
		close(w.ready)
	}
	if len(p.waiting) == 0 {
		p.waiting = nil
	}
}

// stats returns what is pending now and the highest it has been.
func (p *pendingBytes) stats() (used, peak int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used, p.peak
}
