package bridge

import (
	"sync"
	"time"
)

// Failed logins are slowed per client address: after n recent failures, the
// logins of that address are spaced by throttleDelay(n), however many
// connections it opens at once, so that guessing passwords through the
// gateway (and making the broker check each guess) goes at a few tries per
// second at most. Other addresses are not slowed.
const (
	// throttleWindow: an address whose last failure is older is forgotten.
	throttleWindow = time.Minute
	throttleBase   = 50 * time.Millisecond
	throttleMax    = 2 * time.Second
	// throttleMaxWait: a login that would wait longer than this for its
	// turn (an address with many tries queued) is refused at once.
	throttleMaxWait = 5 * time.Second
	// throttleMaxAddrs bounds the addresses remembered.
	throttleMaxAddrs = 10000
)

// throttleDelay is the spacing of logins after n recent failures: doubling
// from throttleBase, at most throttleMax.
func throttleDelay(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	if n > 16 {
		return throttleMax
	}
	return min(throttleBase<<(n-1), throttleMax)
}

// loginThrottle remembers recent login failures per client address.
type loginThrottle struct {
	mu    sync.Mutex
	addrs map[string]*failures // guarded by mu
}

// failures of one address.
type failures struct {
	n    int       // recent failures
	last time.Time // the latest
	next time.Time // when the next login of this address may be checked
}

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{addrs: make(map[string]*failures)}
}

// reserve takes addr's next turn to have a login checked: wait is how long
// to wait for it. ok is false when the turn is more than throttleMaxWait
// away: the login is refused without being checked.
func (l *loginThrottle) reserve(addr string, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.addrs[addr]
	if f == nil {
		return 0, true
	}
	if now.Sub(f.last) > throttleWindow {
		delete(l.addrs, addr)
		return 0, true
	}
	start := f.next
	if start.Before(now) {
		start = now
	}
	if wait = start.Sub(now); wait > throttleMaxWait {
		return 0, false
	}
	f.next = start.Add(throttleDelay(f.n))
	return wait, true
}

// failed records a failed login of addr.
func (l *loginThrottle) failed(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.addrs[addr]
	if f == nil {
		if len(l.addrs) >= throttleMaxAddrs {
			l.evictLocked(now)
		}
		f = &failures{}
		l.addrs[addr] = f
	} else if now.Sub(f.last) > throttleWindow {
		*f = failures{}
	}
	f.n++
	f.last = now
	if next := now.Add(throttleDelay(f.n)); next.After(f.next) {
		f.next = next
	}
}

// evictLocked makes room: addresses whose failures are old go first; when
// none is, an arbitrary one (an attacker with that many addresses gets
// one of them unslowed, never more memory).
func (l *loginThrottle) evictLocked(now time.Time) {
	for addr, f := range l.addrs {
		if now.Sub(f.last) > throttleWindow {
			delete(l.addrs, addr)
		}
	}
	if len(l.addrs) < throttleMaxAddrs {
		return
	}
	for addr := range l.addrs {
		delete(l.addrs, addr)
		return
	}
}

// size is how many addresses are remembered (tests).
func (l *loginThrottle) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.addrs)
}
