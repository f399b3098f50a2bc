package bridge

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// wrkLedger records what the workers saw.
type wrkLedger struct {
	mu        sync.Mutex
	got       map[string]int // times handed out
	acked     map[string]int // times DELETED
	abandoned map[string]bool
	nAcked    atomic.Int64
}

func newWrkLedger() *wrkLedger {
	return &wrkLedger{got: map[string]int{}, acked: map[string]int{}, abandoned: map[string]bool{}}
}

// wrkRun produces total messages with producers connections and consumes
// them with workers connections looping get → delete. With abandonEvery >
// 0, every abandonEvery-th get the worker drops its connection without
// delete (and reconnects).
func wrkRun(t *testing.T, producers, perProducer, workers int, abandonEvery int64) (*wrkLedger, string) {
	t.Helper()
	total := producers * perProducer
	g := startGateway(t, nil)
	q := testbroker.Name(t, "work")
	// The queue exists before the workers start, so their first gets are
	// plain misses.
	{
		c := g.dial()
		c.Do("get "+q+"\r\n", "END\r\n")
		c.Close()
	}

	led := newWrkLedger()
	deadline := time.Now().Add(50 * time.Second)
	var (
		wg   sync.WaitGroup
		errs = make(chan error, producers+workers)
		stop = make(chan struct{}) // closed on the first error
		once sync.Once
		gets atomic.Int64
	)
	fail := func(err error) {
		errs <- err
		once.Do(func() { close(stop) })
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}

	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := mctest.DialConn(g.addr)
			if err != nil {
				fail(err)
				return
			}
			defer c.Close()
			for i := range perProducer {
				if stopped() {
					return
				}
				body := fmt.Sprintf("p%d-%05d", p, i)
				if line, err := c.Set(q, body); err != nil || line != "STORED" {
					fail(fmt.Errorf("producer %d: set %s: %q, %v (want STORED)", p, body, line, err))
					return
				}
			}
		}()
	}

	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := mctest.DialConn(g.addr)
			if err != nil {
				fail(err)
				return
			}
			defer func() { c.Close() }()
			for led.nAcked.Load() < int64(total) {
				if stopped() {
					return
				}
				if time.Now().After(deadline) {
					fail(fmt.Errorf("worker %d: timed out with %d/%d acked", w, led.nAcked.Load(), total))
					return
				}
				ok, body, err := c.Get(q)
				if err != nil {
					fail(fmt.Errorf("worker %d: %w", w, err))
					return
				}
				if !ok {
					continue
				}
				n := gets.Add(1)
				led.mu.Lock()
				led.got[body]++
				abandon := abandonEvery > 0 && n%abandonEvery == 0
				if abandon {
					// Recorded before the connection goes, so that the
					// redelivery can never be seen first.
					led.abandoned[body] = true
				}
				led.mu.Unlock()
				if abandon {
					c.Close()
					if c, err = mctest.DialConn(g.addr); err != nil {
						fail(err)
						return
					}
					continue
				}
				line, err := c.Delete(q)
				if err != nil || line != "DELETED" {
					fail(fmt.Errorf("worker %d: delete after getting %s: %q, %v (want DELETED)", w, body, line, err))
					return
				}
				led.mu.Lock()
				led.acked[body]++
				led.mu.Unlock()
				led.nAcked.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every message was acked exactly once.
	if len(led.acked) != total {
		t.Errorf("%d distinct messages acked, want %d", len(led.acked), total)
	}
	for p := range producers {
		for i := range perProducer {
			b := fmt.Sprintf("p%d-%05d", p, i)
			if led.acked[b] != 1 {
				t.Errorf("message %s acked %d times, want 1", b, led.acked[b])
			}
		}
	}
	if depth := testbroker.QueueDepth(t, q); depth != 0 {
		t.Errorf("queue holds %d ready messages at the end, want 0", depth)
	}
	return led, q
}

func TestWorkersExactlyOnce(t *testing.T) {
	start := time.Now()
	led, _ := wrkRun(t, 4, 2500, 8, 0)
	for b, n := range led.got {
		if n != 1 {
			t.Errorf("message %s handed out %d times; no worker failed, so no duplicate may occur", b, n)
		}
	}
	if len(led.got) != 10000 {
		t.Errorf("%d distinct messages handed out, want 10000", len(led.got))
	}
	t.Logf("10000 messages through 4 producers and 8 workers in %v", time.Since(start))
}

func TestWorkersDisconnectWhileHolding(t *testing.T) {
	start := time.Now()
	led, _ := wrkRun(t, 4, 2500, 8, 500)
	if len(led.abandoned) == 0 {
		t.Fatalf("no worker abandoned a message: the variant tested nothing")
	}
	dups := 0
	for b, n := range led.got {
		if n > 1 {
			dups++
			if !led.abandoned[b] {
				t.Errorf("message %s handed out %d times but no worker ever dropped it", b, n)
			}
		}
	}
	for b := range led.abandoned {
		if led.got[b] < 2 {
			t.Errorf("abandoned message %s handed out %d times; it must come back", b, led.got[b])
		}
	}
	if len(led.got) != 10000 {
		t.Errorf("%d distinct messages handed out, want 10000", len(led.got))
	}
	t.Logf("10000 messages, %d abandoned, %d redelivered, in %v", len(led.abandoned), dups, time.Since(start))
}
