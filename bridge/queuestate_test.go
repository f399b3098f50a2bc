package bridge

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/bridge/internal/queues"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	var ms runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// useQueues sets, gets and deletes one message in each queue through the
// gateway, over a few pipelined connections, and fails the test unless
// every reply is the expected one.
func useQueues(t *testing.T, addr string, names []string, conns int) {
	t.Helper()
	for _, step := range []func(q string) (cmds, want []string){
		func(q string) ([]string, []string) {
			return []string{"set " + q + " 0 0 5\r\nhello\r\n"}, []string{"STORED"}
		},
		// A reservation is the connection's: get and delete go together.
		func(q string) ([]string, []string) {
			return []string{"get " + q + "\r\n", "delete " + q + "\r\n"}, []string{"VALUE " + q + " 0 5", "DELETED"}
		},
	} {
		start := time.Now()
		done := make(chan struct{}, conns)
		for c := range conns {
			go func() {
				defer func() { done <- struct{}{} }()
				var cmds, want []string
				for i := c; i < len(names); i += conns {
					c, w := step(names[i])
					cmds = append(cmds, c...)
					want = append(want, w...)
				}
				for i, r := range pipelined(t, addr, cmds, true) {
					if r != want[i] {
						t.Errorf("%q: %q", cmds[i], r)
						return
					}
				}
			}()
		}
		for range conns {
			<-done
		}
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("%d queues: step done in %v", len(names), time.Since(start).Round(time.Millisecond))
	}
}

// An idle queue (used once, nothing held) costs the gateway at most 2 KiB
// of heap while its state is kept: the heap grown by N such queues,
// after collection, divided by N.
func TestIdleQueueMemory(t *testing.T) {
	g := startGateway(t, nil)
	const n = 2000
	prefix := testbroker.Name(t, "mem")
	warm := make([]string, 50)
	for i := range warm {
		warm[i] = fmt.Sprintf("%s.w%02d", prefix, i)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s.%05d", prefix, i)
	}
	t.Cleanup(func() { deleteQueues(t, append(warm, names...)) })
	// Channels, pools and caches that do not grow with the number of
	// queues exist before the measure starts.
	useQueues(t, g.addr, warm, 4)
	before := heapInUse()
	useQueues(t, g.addr, names, 4)
	after := heapInUse()
	per := (int64(after) - int64(before)) / n
	t.Logf("idle queue state: %d bytes a queue (%d queues, heap %d -> %d)", per, n, before, after)
	if per > 2048 {
		t.Errorf("an idle queue costs %d bytes, want at most 2048", per)
	}
	// Released, they cost (almost) nothing: the maps that held them
	// shrink too.
	g.srv.queues.SetIdle(time.Nanosecond)
	if released := g.srv.queues.Sweep(); released != n+len(warm) {
		t.Errorf("%d queues released, want %d", released, n+len(warm))
	}
	if f := g.broker.Fetchers(); f != 0 {
		t.Errorf("the broker client keeps %d queues after their release", f)
	}
	left := (int64(heapInUse()) - int64(before)) / n
	t.Logf("after their release: %d bytes a queue", left)
	if left > 64 {
		t.Errorf("released queues still cost %d bytes each", left)
	}
	runtime.KeepAlive(g)
}

// shortIdle makes queue state idle after d for the gateways the test
// starts from now on.
func shortIdle(t *testing.T, d time.Duration) {
	old := queues.IdleRelease
	queues.IdleRelease = d
	t.Cleanup(func() { queues.IdleRelease = old })
}

func metricValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	go func() { c.Collect(ch); close(ch) }()
	var v float64
	for m := range ch {
		v = toFloat64(m)
	}
	return v
}

// gathered is the value of the gateway's metric name (one series).
func gathered(t *testing.T, g *gateway, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(g.srv.metrics.Collectors()...)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return toFloat64Dto(f.GetMetric()[0])
		}
	}
	t.Fatalf("no single series %s", name)
	return 0
}

func toFloat64Dto(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

// limits.max_queues bounds the queues with state in the gateway, YAML
// queues included: past it a set of a new queue answers SERVER_ERROR too
// many queues and a get of one misses, while the queues it has keep
// working, the YAML ones are never refused, and the refusals are counted
// and logged once a minute. A released idle queue frees its place, and
// its messages are all there when it is used again.
func TestMaxQueues(t *testing.T) {
	shortIdle(t, time.Second)
	yamlQ := testbroker.Name(t, "yaml")
	cfg := yamlConfig(t, "limits: {max_queues: 3}\nqueues: [{name: "+yamlQ+"}]\n")
	var log testserve.LogBuffer
	g := startGatewayLog(t, cfg, &log)
	c := g.dial()
	a, b, extra := testbroker.Name(t, "a"), testbroker.Name(t, "b"), testbroker.Name(t, "extra")
	c.Do("set "+a+" 0 0 2\r\na1\r\n", "STORED\r\n")
	c.Do("set "+b+" 0 0 2\r\nb1\r\n", "STORED\r\n")
	if n := gathered(t, g, "mcbridge_queues"); n != 3 {
		t.Errorf("mcbridge_queues = %v, want 3 (one YAML, two auto-declared)", n)
	}
	for range 3 {
		c.Do("set "+extra+" 0 0 1\r\nx\r\n", "SERVER_ERROR too many queues\r\n")
	}
	c.Do("get "+extra+"\r\n", "END\r\n")
	// The queues it has, and the YAML one, keep working.
	c.Do("set "+yamlQ+" 0 0 1\r\ny\r\n", "STORED\r\n")
	c.Do("set "+a+" 0 0 2\r\na2\r\n", "STORED\r\n")
	c.Do("get "+yamlQ+"\r\n", "VALUE "+yamlQ+" 0 1\r\ny\r\nEND\r\n")
	c.Do("delete "+yamlQ+"\r\n", "DELETED\r\n")
	if got := metricValue(t, g.srv.metrics.LimitRefusals.WithLabelValues("max_queues")); got != 4 {
		t.Errorf("mcbridge_limit_refusals_total{limit=max_queues} = %v, want 4", got)
	}
	if n := strings.Count(log.String(), "limits.max_queues reached"); n != 1 {
		t.Errorf("the refusals were logged %d times, want once:\n%s", n, log.String())
	}
	if d := testbroker.QueueDepth(t, a); d != 2 {
		t.Errorf("%s holds %d messages, want 2", a, d)
	}
	if _, err := testbroker.Channel(t).QueueDeclarePassive(extra, true, false, false, false, nil); err == nil {
		t.Errorf("queue %s was declared though refused", extra)
	}
	// Idle, a and b are released (the YAML queue never is) and free
	// their places.
	testbroker.Eventually(t, 10*time.Second, "idle queues released", func() bool {
		g.srv.queues.Sweep()
		return g.srv.queues.Len() == 1
	})
	if g.srv.queues.Lookup(yamlQ) == nil {
		t.Errorf("the YAML queue was released")
	}
	if got := gathered(t, g, "mcbridge_queues"); got != 1 {
		t.Errorf("mcbridge_queues = %v, want 1", got)
	}
	// Released queues come back on their next use with every message.
	for _, want := range []struct{ q, v string }{{a, "a1"}, {a, "a2"}, {b, "b1"}} {
		c.Do("get "+want.q+"\r\n", "VALUE "+want.q+" 0 "+fmt.Sprint(len(want.v))+"\r\n"+want.v+"\r\nEND\r\n")
		c.Do("delete "+want.q+"\r\n", "DELETED\r\n")
	}
	c.Do("get "+a+"\r\n", "END\r\n")
	// And fill the table again.
	c.Do("set "+extra+" 0 0 1\r\nx\r\n", "SERVER_ERROR too many queues\r\n")
}

// A queue is never released while a client holds a reservation of it or
// waits on it (kestrel's /t=), however long they take: the reservation is
// still acked, the waiter still served. A third queue, idle, is released
// meanwhile (so a sweep did look at the other two).
func TestBusyQueuesAreNotReleased(t *testing.T) {
	shortIdle(t, 200*time.Millisecond)
	g := startGateway(t, nil)
	held, waited, idle := testbroker.Name(t, "held"), testbroker.Name(t, "waited"), testbroker.Name(t, "idle")
	c := g.dial()
	c.Do("set "+held+" 0 0 1\r\nh\r\n", "STORED\r\n")
	c.Do("get "+held+"\r\n", "VALUE "+held+" 0 1\r\nh\r\nEND\r\n")
	w := g.dial()
	w.Send("get " + waited + "/t=60000\r\n")
	testbroker.Eventually(t, 10*time.Second, "the wait to begin", func() bool { return g.broker.Waiters(waited) > 0 })
	c.Do("set "+idle+" 0 0 1\r\ni\r\n", "STORED\r\n")
	testbroker.Eventually(t, 10*time.Second, "the idle queue released", func() bool {
		g.srv.queues.Sweep()
		return g.srv.queues.Lookup(idle) == nil
	})
	for _, q := range []string{held, waited} {
		if g.srv.queues.Lookup(q) == nil {
			t.Errorf("queue %s was released while in use", q)
		}
	}
	c.Do("set "+waited+" 0 0 1\r\nw\r\n", "STORED\r\n")
	w.Expect("VALUE " + waited + "/t=60000 0 1\r\nw\r\nEND\r\n")
	w.Do("delete "+waited+"\r\n", "DELETED\r\n")
	c.Do("delete "+held+"\r\n", "DELETED\r\n")
	c.Do("get "+idle+"\r\n", "VALUE "+idle+" 0 1\r\ni\r\nEND\r\n")
	c.Do("delete "+idle+"\r\n", "DELETED\r\n")
	for _, q := range []string{held, waited, idle} {
		if d := testbroker.QueueDepth(t, q); d != 0 {
			t.Errorf("%s holds %d messages, want 0", q, d)
		}
	}
	// Idle now, all three go, here and in the broker client.
	testbroker.Eventually(t, 10*time.Second, "every queue released", func() bool {
		g.srv.queues.Sweep()
		return g.srv.queues.Len() == 0 && g.broker.Fetchers() == 0
	})
}

// The broker's own queue limit (a vhost's max-queues) refusing a new queue
// gets the answer of limits.max_queues, and harms no other queue: a
// reservation held stays and is acked, sets and gets go on.
func TestBrokerQueueLimit(t *testing.T) {
	g := startGateway(t, nil)
	mine, refused := testbroker.Name(t, "mine"), testbroker.Name(t, "refused")
	c := g.dial()
	c.Do("set "+mine+" 0 0 2\r\nm1\r\n", "STORED\r\n")
	c.Do("set "+mine+" 0 0 2\r\nm2\r\n", "STORED\r\n")
	c.Do("get "+mine+"\r\n", "VALUE "+mine+" 0 2\r\nm1\r\nEND\r\n")
	out, err := testbroker.Rabbitmqctl("list_queues", "-p", "/", "--no-table-headers", "name")
	if err != nil {
		t.Fatal(err)
	}
	n := len(strings.Fields(out))
	if _, err := testbroker.Rabbitmqctl("set_vhost_limits", "-p", "/", fmt.Sprintf(`{"max-queues": %d}`, n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := testbroker.Rabbitmqctl("clear_vhost_limits", "-p", "/"); err != nil {
			t.Errorf("clear the vhost limit: %v", err)
		}
	})
	c.Do("set "+refused+" 0 0 1\r\nx\r\n", "SERVER_ERROR too many queues\r\n")
	c.Do("get "+refused+"\r\n", "END\r\n")
	c.Do("delete "+mine+"\r\n", "DELETED\r\n")
	c.Do("set "+mine+" 0 0 2\r\nm3\r\n", "STORED\r\n")
	other := g.dial()
	other.Do("get "+mine+"\r\n", "VALUE "+mine+" 0 2\r\nm2\r\nEND\r\n")
	c.Do("get "+mine+"\r\n", "VALUE "+mine+" 0 2\r\nm3\r\nEND\r\n")
	other.Do("delete "+mine+"\r\n", "DELETED\r\n")
	c.Do("delete "+mine+"\r\n", "DELETED\r\n")
	if d := testbroker.QueueDepth(t, mine); d != 0 {
		t.Errorf("%s holds %d messages, want 0", mine, d)
	}
	if got := metricValue(t, g.srv.metrics.LimitRefusals.WithLabelValues("max_queues")); got != 0 {
		t.Errorf("the broker's limit counted as limits.max_queues: %v", got)
	}
}

// declareQueues declares the queues as the gateway would (durable,
// classic), in parallel over a few channels without waiting for each
// answer: thousands of queues in seconds.
func declareQueues(t *testing.T, names []string) {
	t.Helper()
	const chans = 8
	conn := testbroker.Dial(t)
	errs := make(chan error, chans)
	for c := range chans {
		go func() {
			ch, err := conn.Channel()
			if err != nil {
				errs <- err
				return
			}
			defer ch.Close()
			args := amqp091.Table{"x-queue-type": "classic"}
			for i := c; i < len(names); i += chans {
				if _, err := ch.QueueDeclare(names[i], true, false, false, true, args); err != nil {
					errs <- err
					return
				}
			}
			// A round trip: the broker has done every declaration before.
			_, err = ch.QueueDeclarePassive(names[c], true, false, false, false, nil)
			errs <- err
		}()
	}
	for range chans {
		if err := <-errs; err != nil {
			t.Fatalf("declare: %v", err)
		}
	}
}

// scaleQueues is the number of queues of the scale tests:
// MCBRIDGE_SCALE_QUEUES, else def.
func scaleQueues(t *testing.T, def int) int {
	if v := os.Getenv("MCBRIDGE_SCALE_QUEUES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MCBRIDGE_SCALE_QUEUES=%q", v)
		}
		return n
	}
	return def
}

// stats answers within a second with 10,000 queues known to the gateway:
// it reads at most a bounded number of ready counts from the broker, in a
// bounded time, and shows the others as last read; repeated, it reads the
// oldest next, so every count is eventually read.
//
// By default it runs with 2,000 queues (declaring 10,000 takes the broker
// minutes on a loaded 2-core machine); MCBRIDGE_SCALE_QUEUES=10000 runs
// it at the size of the issue.
func TestStatsWithManyQueues(t *testing.T) {
	n := scaleQueues(t, 2000)
	cfg := testConfig()
	cfg.Limits.MaxQueues = n
	g := startGateway(t, cfg)
	prefix := "s" + randomHex(4)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s.%05d", prefix, i)
	}
	t.Cleanup(func() { deleteQueues(t, names) })
	start := time.Now()
	declareQueues(t, names)
	t.Logf("%d queues declared in %v", n, time.Since(start).Round(time.Millisecond))
	// The gateway learns them: a get of each (a miss).
	start = time.Now()
	const conns = 8
	errs := make(chan string, conns)
	for c := range conns {
		go func() {
			var cmds []string
			for i := c; i < n; i += conns {
				cmds = append(cmds, "get "+names[i]+"\r\n")
			}
			for i, r := range pipelined(t, g.addr, cmds, false) {
				if r != "END" {
					errs <- fmt.Sprintf("%q: %q", cmds[i], r)
					return
				}
			}
			errs <- ""
		}()
	}
	for range conns {
		if e := <-errs; e != "" {
			t.Fatal(e)
		}
	}
	t.Logf("%d queues got (missed) through the gateway in %v", n, time.Since(start).Round(time.Millisecond))
	if got := g.srv.queues.Len(); got != n {
		t.Fatalf("the gateway knows %d queues, want %d", got, n)
	}
	c := mctest.MustDialConn(t, g.addr)
	defer c.Close()
	bound := time.Second
	if raceEnabled {
		bound = 3 * time.Second
	}
	counted := 0
	for i := range 3 {
		start := time.Now()
		st, err := c.Stats("")
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		items, known := 0, 0
		for k, v := range st {
			if strings.HasSuffix(k, "_items") && !strings.HasSuffix(k, "_total_items") && strings.HasPrefix(k, "queue_"+prefix) {
				items++
				if v != "unknown" {
					known++
				}
			}
		}
		t.Logf("stats %d: %v, %d queues listed, %d with a count", i, took.Round(time.Millisecond), items, known)
		if took >= bound {
			t.Errorf("stats %d took %v with %d queues, want under %v", i, took, n, bound)
		}
		if items != n {
			t.Errorf("stats %d lists %d queues, want %d", i, items, n)
		}
		if known < counted {
			t.Errorf("stats %d: %d counts known, fewer than %d before", i, known, counted)
		}
		counted = known
	}
	if counted == 0 {
		t.Errorf("no stats showed a single count")
	}
}
