package bridge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// wrkConn is a raw text-protocol connection for use from goroutines: it
// returns errors instead of failing the test.
type wrkConn struct {
	nc net.Conn
	r  *bufio.Reader
}

func wrkDial(addr string) (*wrkConn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &wrkConn{nc: nc, r: bufio.NewReader(nc)}, nil
}

func (c *wrkConn) close() { _ = c.nc.Close() }

// roundTrip sends s and returns the first reply line without CR LF.
func (c *wrkConn) roundTrip(s string) (string, error) {
	_ = c.nc.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c.nc, s); err != nil {
		return "", err
	}
	return c.readLine()
}

func (c *wrkConn) readLine() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return line, err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return line, fmt.Errorf("reply line %q not ended by CR LF", line)
	}
	return strings.TrimSuffix(line, "\r\n"), nil
}

// set stores body and wants STORED.
func (c *wrkConn) set(key, body string) error {
	line, err := c.roundTrip(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(body), body))
	if err != nil {
		return fmt.Errorf("set %s: %w", body, err)
	}
	if line != "STORED" {
		return fmt.Errorf("set %s: reply %q, want STORED", body, line)
	}
	return nil
}

// get reserves the next message of key: ok is false on a miss.
func (c *wrkConn) get(key string) (body string, ok bool, err error) {
	line, err := c.roundTrip("get " + key + "\r\n")
	if err != nil {
		return "", false, err
	}
	if line == "END" {
		return "", false, nil
	}
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "VALUE" || f[1] != key {
		return "", false, fmt.Errorf("get: unexpected reply %q", line)
	}
	n, err := strconv.Atoi(f[3])
	if err != nil {
		return "", false, fmt.Errorf("get: bad length in %q", line)
	}
	data := make([]byte, n+2)
	if _, err := io.ReadFull(c.r, data); err != nil {
		return "", false, err
	}
	if string(data[n:]) != "\r\n" {
		return "", false, fmt.Errorf("get: data block not ended by CR LF: %q", data)
	}
	if end, err := c.readLine(); err != nil || end != "END" {
		return "", false, fmt.Errorf("get: want END after the value, got %q (%v)", end, err)
	}
	return string(data[:n]), true, nil
}

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
		c.do("get "+q+"\r\n", "END\r\n")
		c.close()
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
			c, err := wrkDial(g.addr)
			if err != nil {
				fail(err)
				return
			}
			defer c.close()
			for i := range perProducer {
				if stopped() {
					return
				}
				if err := c.set(q, fmt.Sprintf("p%d-%05d", p, i)); err != nil {
					fail(fmt.Errorf("producer %d: %w", p, err))
					return
				}
			}
		}()
	}

	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := wrkDial(g.addr)
			if err != nil {
				fail(err)
				return
			}
			defer func() { c.close() }()
			for led.nAcked.Load() < int64(total) {
				if stopped() {
					return
				}
				if time.Now().After(deadline) {
					fail(fmt.Errorf("worker %d: timed out with %d/%d acked", w, led.nAcked.Load(), total))
					return
				}
				body, ok, err := c.get(q)
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
					c.close()
					if c, err = wrkDial(g.addr); err != nil {
						fail(err)
						return
					}
					continue
				}
				line, err := c.roundTrip("delete " + q + "\r\n")
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
	if depth := avDepth(t, q); depth != 0 {
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
