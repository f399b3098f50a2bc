package faults

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// A full broker restart under load: every STORED message survives it (a
// durable queue, persistent messages, publisher confirms), sets and gets
// answer SERVER_ERROR while the broker is away, and the gateway recovers by
// itself within about a second of the broker being back.
func TestBrokerRestartUnderLoad(t *testing.T) {
	g := testgateway.Start(t, nil, testgateway.Options{})
	q := testbroker.Name(t, "q")
	l := newLedger()
	const producers, consumers = 6, 6
	ld := startLoad(t, g.Addr, q, l, producers, consumers, 0, 3)
	testbroker.Eventually(t, 20*time.Second, "sets to flow", func() bool { return l.storedCount() >= 500 })

	stoppedAt := time.Now()
	testbroker.StopNode(t)
	stopped := time.Since(stoppedAt)
	unknown := l.unknownCount()
	testbroker.Eventually(t, 10*time.Second, "sets to fail while the broker is down", func() bool { return l.unknownCount() >= unknown+10*producers })
	testbroker.StartNode(t)
	back := time.Now()
	ready := g.WaitReady(20 * time.Second)
	stored := l.storedCount()
	testbroker.Eventually(t, 20*time.Second, "sets to succeed again", func() bool { return l.storedCount() > stored })
	storing := time.Since(back)
	t.Logf("broker stopped in %v; gateway ready %v and storing again %v after the broker was back", stopped.Round(time.Millisecond), ready.Round(time.Millisecond), storing.Round(time.Millisecond))
	if storing > 3*time.Second {
		t.Errorf("sets stored again only %v after the broker was back", storing)
	}
	base := l.storedCount()
	testbroker.Eventually(t, 20*time.Second, "sets to flow after the restart", func() bool { return l.storedCount() >= base+300 })
	ld.finish(t, l, 60*time.Second)
	c := mctest.MustDialConn(t, g.Addr)
	for v, n := range mctest.Drain(t, c, q) {
		for range n {
			l.consumed[v] = append(l.consumed[v], time.Now())
		}
	}
	dups := l.check(t, stoppedAt)
	t.Logf("%d STORED (all consumed), %d SERVER_ERROR on set (%d stored after all), %d duplicates after the restart (mcbridge_redelivered_total %v)",
		len(l.stored), len(l.unknown), countStoredUnknown(l), dups, g.Metric("mcbridge_redelivered_total"))
}

var mcbridgeBinary struct {
	once sync.Once
	path string
	err  error
}

// buildMcbridge builds cmd/mcbridge once per test binary.
func buildMcbridge(t *testing.T) string {
	t.Helper()
	b := &mcbridgeBinary
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "mcbridge-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "mcbridge")
		out, err := exec.Command("go", "build", "-o", b.path, "../cmd/mcbridge").CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build ../cmd/mcbridge: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// startProcessGateway runs mcbridge as a process on the test broker and
// returns its memcache address and the process.
func startProcessGateway(t *testing.T, name string) (string, *exec.Cmd) {
	t.Helper()
	cfgFile := filepath.Join(t.TempDir(), "mcbridge.yml")
	y := fmt.Sprintf("listen: 127.0.0.1:0\nmetrics_listen: \"\"\namqp:\n  urls: [%q]\n  connection_name: %s\n", testbroker.URL, name)
	if err := os.WriteFile(cfgFile, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(buildMcbridge(t), "-config", cfgFile, "-log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == "mcbridge serving" {
				a, _ := l["listen"].(string)
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return a, cmd
	case <-time.After(30 * time.Second):
		t.Fatal("mcbridge did not start serving within 30s")
		return "", nil
	}
}

// kill -9 of the gateway under load: nothing STORED is lost (the broker
// has it: confirms come from the broker, not from the gateway's memory),
// what clients held goes back to the queue when the broker sees the
// gateway's connections die, and a new gateway hands it out again. The
// duplicates are bounded by what was in flight: reservations held and acks
// not yet written when the process died.
func TestGatewayKilledUnderLoad(t *testing.T) {
	q := testbroker.Name(t, "q")
	addr, cmd := startProcessGateway(t, testgateway.UniqueName())
	l := newLedger()
	const producers, consumers = 6, 6
	ld := startLoad(t, addr, q, l, producers, consumers, 0, 5)
	testbroker.Eventually(t, 20*time.Second, "sets and gets to flow", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.stored) >= 800 && len(l.consumed) >= 500
	})
	killedAt := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The clients of the dead gateway stop; their errors are the kill's.
	ld.stopProd.Store(true)
	ld.stopCons.Store(true)
	ld.prodWG.Wait()
	ld.consWG.Wait()
	close(ld.errs)
	for err := range ld.errs {
		if err != nil && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "connection reset") {
			t.Logf("client after the kill: %v", err)
		}
	}
	l.mu.Lock()
	inFlightBound := 2 * consumers
	l.mu.Unlock()

	addr2, _ := startProcessGateway(t, testgateway.UniqueName())
	c := mctest.MustDialConn(t, addr2)
	testbroker.Eventually(t, 20*time.Second, "the broker to requeue the dead gateway's deliveries", func() bool {
		return testbroker.Unacked(t, q) == 0
	})
	for v, n := range mctest.Drain(t, c, q) {
		for range n {
			l.consumed[v] = append(l.consumed[v], time.Now())
		}
	}
	dups := l.check(t, killedAt)
	t.Logf("killed after %d STORED; %d duplicates (bound %d: reservations held and acks unwritten at the kill)", len(l.stored), dups, inFlightBound)
	if dups > inFlightBound {
		t.Errorf("%d duplicates after a kill -9 with %d consumers: more than was in flight", dups, consumers)
	}
}

// A broker that hangs (its VM stopped) answers nothing, while the TCP
// connections stay up until heartbeats give up on them: every get and set
// still answers SERVER_ERROR within the broker timeout (confirm_timeout),
// the gateway stops within its grace period, and once the broker moves
// again, what it answered late (a basic.get's message) goes back: nothing is
// stranded and the next gets work.
func TestFrozenBrokerBoundsEveryWait(t *testing.T) {
	cfg := testgateway.Config()
	cfg.AMQP.ConfirmTimeout = time.Second
	g := testgateway.Start(t, cfg, testgateway.Options{})
	q := testbroker.Name(t, "q")
	c := mctest.MustDialConn(t, g.Addr)
	expect(t, "set", "STORED")(c.Set(q, "before"))
	expect(t, "set", "STORED")(c.Set(q, "second"))
	thaw := testbroker.FreezeNode(t)
	for _, op := range []struct {
		name string
		do   func() (string, error)
	}{
		{"get", func() (string, error) {
			_, _, err := c.Get(q)
			if err != nil {
				return err.Error(), nil
			}
			return "a value or a miss", nil
		}},
		{"set", func() (string, error) { return c.Set(q, "during") }},
		{"get of a new queue", func() (string, error) {
			_, _, err := c.Get(q + ".new")
			if err != nil {
				return err.Error(), nil
			}
			return "a value or a miss", nil
		}},
	} {
		start := time.Now()
		r, err := op.do()
		took := time.Since(start)
		if err != nil || !strings.HasPrefix(r, "SERVER_ERROR ") {
			t.Errorf("%s while the broker hangs: %q %v, want SERVER_ERROR", op.name, r, err)
		}
		if took > cfg.AMQP.ConfirmTimeout+time.Second {
			t.Errorf("%s while the broker hangs answered after %v", op.name, took)
		}
		t.Logf("%s while the broker hangs: %q after %v", op.name, r, took.Round(time.Millisecond))
	}
	thaw()
	// The basic.get that timed out is answered now: its message goes back.
	testbroker.Eventually(t, 15*time.Second, "nothing unacked after the thaw", func() bool { return testbroker.Unacked(t, q) == 0 })
	got := mctest.Drain(t, c, q)
	if got["before"] != 1 || got["second"] != 1 {
		t.Errorf("after the thaw the queue gave %v; want before and second once (and during, whose set had no answer, at most once)", got)
	}
}

// A graceful stop while the broker hangs ends within its grace period: the
// connections' close is bounded, and nothing waits for the broker without
// a deadline.
func TestStopWhileBrokerFrozen(t *testing.T) {
	g := testgateway.Start(t, nil, testgateway.Options{})
	q := testbroker.Name(t, "q")
	c := mctest.MustDialConn(t, g.Addr)
	expect(t, "set", "STORED")(c.Set(q, "held"))
	if hit, _, err := c.Get(q); !hit || err != nil {
		t.Fatalf("get: %v %v", hit, err)
	}
	testbroker.FreezeNode(t)
	stopStart := time.Now()
	g.Stop()
	took := time.Since(stopStart)
	t.Logf("gateway stopped in %v while the broker hung", took.Round(time.Millisecond))
	// The close of each broker connection is bounded (2s), and a stopping
	// gateway requeues what clients hold without waiting for the broker.
	if took > 5*time.Second {
		t.Errorf("the gateway took %v to stop while the broker hung", took)
	}
}
