package faults

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// TestSocketFuzz throws hostile and broken clients at a running gateway
// and its private broker: many connections at once send random bytes,
// valid commands of all three framings (text, meta, binary, quiet opcodes
// and kestrel options included) and the same commands with their bytes
// broken, pipelined, in pieces, with huge declared lengths, and hang up
// abruptly (close, reset, half-close) at any point. Meanwhile well-behaved
// clients (one per framing) work on queues of their own and check every
// reply against a model of their queue. It checks that:
//   - the gateway never crashes, never panics serving a connection, and
//     keeps answering (a fresh connection's version, every 200ms);
//   - the well-behaved clients see only correct replies;
//   - once every connection is gone, the gateway's goroutines are back
//     to what they were before (no connection or wait left behind), and
//     the broker shows no unacked message on any queue the test touched,
//     and the gateway counts none of their deliveries as held;
//   - each well-behaved queue holds exactly the messages its model says
//     (every STORED message is there or was deleted, once).
//
// A failing run prints its seed:
//
//	MCBRIDGE_SOCKFUZZ_SEED=<seed> go test -run TestSocketFuzz ./faults/
//
// replays the same bytes (the interleaving is the machine's).
// MCBRIDGE_SOCKFUZZ_DURATION (default 15s) and MCBRIDGE_SOCKFUZZ_CONNS
// (concurrent fuzz connections, default 50) size the run.
func TestSocketFuzz(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MCBRIDGE_SOCKFUZZ_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MCBRIDGE_SOCKFUZZ_SEED: %v", err)
		}
	}
	run := 15 * time.Second
	if s := os.Getenv("MCBRIDGE_SOCKFUZZ_DURATION"); s != "" {
		var err error
		if run, err = time.ParseDuration(s); err != nil {
			t.Fatalf("MCBRIDGE_SOCKFUZZ_DURATION: %v", err)
		}
	}
	conns := 50
	if s := os.Getenv("MCBRIDGE_SOCKFUZZ_CONNS"); s != "" {
		var err error
		if conns, err = strconv.Atoi(s); err != nil || conns < 0 {
			t.Fatalf("MCBRIDGE_SOCKFUZZ_CONNS: %q", s)
		}
	}
	t.Logf("seed %d (replay with MCBRIDGE_SOCKFUZZ_SEED=%d), %v, %d connections", seed, seed, run, conns)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d: replay with MCBRIDGE_SOCKFUZZ_SEED=%d go test -run TestSocketFuzz ./faults/", seed, seed)
		}
	})
	socketFuzz(t, seed, run, conns)
}

func socketFuzz(t *testing.T, seed uint64, run time.Duration, conns int) {
	// Every queue and exchange the test may make starts with the prefix:
	// the fuzz's mutated keys included, since only keys under it may be
	// declared. The cleanup deletes them all.
	prefix := "sfz" + strconv.FormatUint(seed%1000000, 10)
	t.Cleanup(func() { deleteByPrefix(t, prefix) })
	y := fmt.Sprintf(`listen: 127.0.0.1:0
metrics_listen: ""
limits:
  read_timeout: 1s
defaults:
  reservation_timeout: 2s
auto_declare:
  keys: ["%[1]s.a.*"]
exchanges:
  - {name: %[1]s.fan, type: fanout, keys: ["%[1]s.x.*"]}
queues:
  - {name: %[1]s.classic, bindings: [{exchange: %[1]s.fan}]}
  - {name: %[1]s.quorum, type: quorum, delivery_limit: 5}
  - {name: %[1]s.auto, ack: auto}
  - {name: %[1]s.full, max_length: 5, overflow: reject-publish}
  - {name: %[1]s.good.text, reservation_timeout: 10m}
  - {name: %[1]s.good.binary, reservation_timeout: 10m}
  - {name: %[1]s.good.meta, reservation_timeout: 10m}
`, prefix)
	cfg, err := config.Load([]byte(y))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, y)
	}
	cfg.AMQP.URLs = testgateway.Config().AMQP.URLs
	logs := &logWatch{}
	g := testgateway.Start(t, cfg, testgateway.Options{Logs: logs})
	baseline := runtime.NumGoroutine()

	fuzzKeys := []string{prefix + ".classic", prefix + ".quorum", prefix + ".auto", prefix + ".full",
		prefix + ".a.one", prefix + ".a.two", prefix + ".x.fan", prefix + ".none"}
	deadline := time.Now().Add(run)
	var wg sync.WaitGroup
	errs := make(chan error, conns+8)

	var tally fuzzTally
	for i := range conns {
		w := &fuzzWorker{id: i, addr: g.Addr, tally: &tally,
			gen: &fuzzGen{rng: rand.New(rand.NewPCG(seed, uint64(i)+100)), keys: fuzzKeys, idle: prefix + ".a.idle", counts: map[string]int{}}}
		wg.Go(func() { w.run(deadline) })
	}
	var good []*goodClient
	for f := range framing(3) {
		gc := &goodClient{f: f, addr: g.Addr, q: prefix + ".good." + f.String(), rng: rand.New(rand.NewPCG(seed, uint64(f)+10))}
		gc.open = func() float64 { return g.Metric("mcbridge_reservations_open", "queue", gc.q) }
		good = append(good, gc)
		wg.Go(func() { errs <- gc.run(deadline) })
	}
	probe := &prober{addr: g.Addr}
	wg.Go(func() { errs <- probe.run(deadline) })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d fuzz connections (%d at a time): %d requests, %d bytes sent, %d bytes received, %d written whole, %d in pieces; endings: %s",
		tally.conns.Load(), conns, tally.requests.Load(), tally.sent.Load(), tally.received.Load(), tally.whole.Load(), tally.pieces.Load(), tally.endings())
	t.Logf("requests by kind: %s", tally.kinds())
	for _, gc := range good {
		t.Logf("well-behaved %s client: %d operations, %d messages stored, %d acked; slowest operation %v (%s)", gc.f, gc.ops, gc.stored, gc.acked, gc.slowest.Round(time.Millisecond), gc.slowestWhat)
	}
	t.Logf("liveness probes: %d, slowest %v", probe.n, probe.slowest.Round(time.Millisecond))
	if n := logs.panics.Load(); n > 0 {
		t.Errorf("the gateway recovered %d panics serving connections:\n%s", n, logs.first())
	}
	if t.Failed() {
		return
	}

	// Every client is gone: the gateway must let go of everything.
	checkGoroutines(t, baseline, func() bool { return g.Metric("mcbridge_connections") == 0 })
	testbroker.Eventually(t, 30*time.Second, "no unacked message on any queue of the test", func() bool {
		unacked, _ := queuesByPrefix(t, prefix)
		for q, n := range unacked {
			if n != 0 {
				t.Logf("%s: %d unacked", q, n)
				return false
			}
		}
		return true
	})
	_, names := queuesByPrefix(t, prefix)
	t.Logf("queues the test made: %d", len(names))
	// Nor may it count a delivery of any of them as held.
	nothingHeld(t, g, names, 30*time.Second)
	for _, gc := range good {
		got := drainRaw(t, gc.q)
		if !slices.Equal(got, gc.queue) {
			t.Errorf("queue %s holds %d messages %q, the well-behaved %s client's model %d %q", gc.q, len(got), clip(got), gc.f, len(gc.queue), clip(gc.queue))
		}
	}
}

func clip(s []string) []string {
	if len(s) > 20 {
		return append(slices.Clip(s[:20]), "…")
	}
	return s
}

// ---- the fuzz connections ----

type fuzzTally struct {
	conns, requests, sent, received, whole, pieces atomic.Int64
	mu                                             sync.Mutex
	ending                                         map[string]int
	kind                                           map[string]int
}

func (ft *fuzzTally) add(g *fuzzGen, ending string) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.ending == nil {
		ft.ending, ft.kind = map[string]int{}, map[string]int{}
	}
	ft.ending[ending]++
	for k, n := range g.counts {
		ft.kind[k] += n
	}
	clear(g.counts)
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func (ft *fuzzTally) endings() string {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return sortedCounts(ft.ending)
}

func (ft *fuzzTally) kinds() string {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return sortedCounts(ft.kind)
}

// fuzzWorker opens one connection after the other until the deadline.
type fuzzWorker struct {
	id    int
	addr  string
	gen   *fuzzGen
	tally *fuzzTally
}

func (w *fuzzWorker) run(deadline time.Time) {
	for time.Now().Before(deadline) {
		w.session(deadline)
	}
}

// session is one connection: a style (text and meta, binary, or noise), a
// batch of requests written whole or in pieces, and an ending.
func (w *fuzzWorker) session(deadline time.Time) {
	g := w.gen
	nc, err := net.DialTimeout("tcp", w.addr, 5*time.Second)
	if err != nil {
		// A gateway that stops accepting is caught by the prober and
		// the well-behaved clients; the fuzz just goes on.
		time.Sleep(10 * time.Millisecond)
		return
	}
	w.tally.conns.Add(1)
	// Replies are read and thrown away as they come, so that the gateway
	// is never stuck writing to a fuzz client (unless the ending says so).
	readDone := make(chan struct{})
	stopReading := g.rng.IntN(20) == 0 // a client that never reads
	go func() {
		defer close(readDone)
		if stopReading {
			return
		}
		n, _ := io.Copy(io.Discard, nc)
		w.tally.received.Add(n)
	}()
	style := g.rng.IntN(10)
	request := func(first bool) string {
		w.tally.requests.Add(1)
		switch {
		case style == 0: // noise, sometimes opening as binary
			g.count("noise")
			b := g.noise(300)
			if first && g.rng.IntN(2) == 0 {
				b[0] = 0x80
			}
			return string(b)
		case g.rng.IntN(100) == 0:
			return g.hugeRequest(style <= 3)
		}
		var s string
		if style <= 3 {
			s = g.binaryRequest()
		} else {
			s = g.textCommand()
		}
		if g.rng.IntN(4) == 0 {
			g.count("mutated")
			s = g.mutate(s)
		}
		return s
	}
	ending := "closed"
	n := 1 + g.rng.IntN(40)
	var batch []byte
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		batch = append(batch, request(i == 0)...)
		// Pipeline a few, then write.
		if g.rng.IntN(3) > 0 && i < n-1 {
			continue
		}
		if err := w.write(nc, batch); err != nil {
			ending = "write failed (gateway closed)"
			break
		}
		batch = batch[:0]
		if g.rng.IntN(4) == 0 {
			time.Sleep(time.Duration(g.rng.IntN(20)) * time.Millisecond)
		}
	}
	if ending == "closed" {
		switch r := g.rng.IntN(10); {
		case r < 3:
			ending = "quit"
			_ = w.write(nc, []byte(g.pick([]string{"quit\r\n", "\x80\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"})))
			w.awaitClose(nc, readDone)
		case r < 5:
			ending = "half-close"
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			w.awaitClose(nc, readDone)
		case r < 7:
			ending = "reset"
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		case r < 8:
			ending = "lingered"
			time.Sleep(time.Duration(g.rng.IntN(300)) * time.Millisecond)
		}
	}
	_ = nc.Close()
	<-readDone
	w.tally.add(g, ending)
}

// write sends b whole, or in pieces of a few bytes with pauses between.
func (w *fuzzWorker) write(nc net.Conn, b []byte) error {
	g := w.gen
	_ = nc.SetWriteDeadline(time.Now().Add(3 * time.Second))
	if g.rng.IntN(3) > 0 || len(b) > 64<<10 {
		w.tally.whole.Add(1)
		n, err := nc.Write(b)
		w.tally.sent.Add(int64(n))
		return err
	}
	w.tally.pieces.Add(1)
	for len(b) > 0 {
		k := min(len(b), 1+g.rng.IntN(24))
		n, err := nc.Write(b[:k])
		w.tally.sent.Add(int64(n))
		if err != nil {
			return err
		}
		b = b[k:]
		if g.rng.IntN(8) == 0 {
			time.Sleep(time.Duration(g.rng.IntN(3)) * time.Millisecond)
		}
	}
	return nil
}

// awaitClose waits a little for the gateway to end the connection after a
// quit or a half-close; a wait (kestrel's /t=) may keep it longer, and the
// client gives up then.
func (w *fuzzWorker) awaitClose(nc net.Conn, readDone chan struct{}) {
	select {
	case <-readDone:
	case <-time.After(time.Duration(100+w.gen.rng.IntN(900)) * time.Millisecond):
	}
}

// ---- liveness ----

// prober opens a fresh connection every 200ms and asks for the version: a
// gateway that stops accepting or answering fails it.
type prober struct {
	addr    string
	n       int
	slowest time.Duration
}

func (p *prober) run(deadline time.Time) error {
	for time.Now().Before(deadline) {
		start := time.Now()
		c, err := dialHunt(p.addr, textFraming)
		if err != nil {
			return fmt.Errorf("liveness probe: dial: %v", err)
		}
		if err := c.send("version\r\n"); err != nil {
			c.close()
			return fmt.Errorf("liveness probe: %v", err)
		}
		l, err := c.line()
		c.close()
		if err != nil || !strings.HasPrefix(l, "VERSION ") {
			return fmt.Errorf("liveness probe after %v: %q %v", time.Since(start), l, err)
		}
		p.n++
		p.slowest = max(p.slowest, time.Since(start))
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// ---- checks ----

// logWatch takes the gateway's log and keeps the panics it recovered.
type logWatch struct {
	panics atomic.Int64
	mu     sync.Mutex
	lines  []string
}

func (l *logWatch) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("panic serving connection")) {
		l.panics.Add(1)
		l.mu.Lock()
		if len(l.lines) < 3 {
			l.lines = append(l.lines, string(p))
		}
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *logWatch) first() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// goroutineSlack is how many goroutines above the baseline the gateway
// may keep once every client left: broker-side helpers that come and go
// (a consumer's pump until its queue idles, a channel being closed).
const goroutineSlack = 8

// checkGoroutines waits until no goroutine serves a connection, the
// gateway counts none, and the goroutine count is back near the baseline;
// else it fails with the goroutines
// grouped by where they stand.
func checkGoroutines(t *testing.T, baseline int, noConns func() bool) {
	t.Helper()
	var last string
	var conn, total int
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		last, conn, total = goroutineDump()
		if conn == 0 && total <= baseline+goroutineSlack && noConns() {
			t.Logf("goroutines: %d after the fuzz, %d before", total, baseline)
			return
		}
		if time.Now().After(end) {
			break
		}
	}
	t.Fatalf("goroutine leak: %d goroutines (%d serving connections; connections gauge at 0: %v) 20s after the last client left, %d before the fuzz:\n%s", total, conn, noConns(), baseline, last)
}

// goroutineDump groups the goroutines by their stacks (minus arguments)
// and counts those in the bridge's connection code.
func goroutineDump() (dump string, conn, total int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	groups := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		total++
		if strings.Contains(g, "mcbridge/bridge.(*conn)") {
			conn++
		}
		lines := strings.Split(g, "\n")
		var key []string
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, "\t") {
				key = append(key, l)
			}
		}
		groups[strings.Join(key, "\n")]++
	}
	var b strings.Builder
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return groups[keys[i]] > groups[keys[j]] })
	for _, k := range keys {
		fmt.Fprintf(&b, "%d ×\n%s\n\n", groups[k], k)
	}
	return b.String(), conn, total
}

// queuesByPrefix lists the broker's queues whose names start with prefix,
// with their unacked counts.
func queuesByPrefix(t testing.TB, prefix string) (unacked map[string]int, names []string) {
	t.Helper()
	out, err := testbroker.Rabbitmqctl("list_queues", "--no-table-headers", "name", "messages_unacknowledged")
	if err != nil {
		t.Fatal(err)
	}
	unacked = map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || !strings.HasPrefix(f[0], prefix+".") {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("rabbitmqctl list_queues: %q", line)
		}
		unacked[f[0]] = n
		names = append(names, f[0])
	}
	return unacked, names
}

// deleteByPrefix deletes every queue and exchange whose name starts with
// prefix.
func deleteByPrefix(t testing.TB, prefix string) {
	_, names := queuesByPrefix(t, prefix)
	out, err := testbroker.Rabbitmqctl("list_exchanges", "--no-table-headers", "name")
	if err != nil {
		t.Error(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix+".") {
			names = append(names, l)
		}
	}
	for _, n := range names {
		testbroker.Delete(t, n)
	}
	if _, left := queuesByPrefix(t, prefix); len(left) > 0 {
		t.Errorf("queues left after the cleanup: %q", left)
	}
}
