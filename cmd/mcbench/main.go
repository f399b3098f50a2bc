// Command mcbench measures mcbridge against raw amqp091-go in one run, on
// the same broker, at the same concurrency: publish+confirm versus set, and
// consume+ack versus get+delete. It checks that every message was received
// exactly once and fails when one was lost or duplicated.
//
//	go run ./cmd/mcbench -clients 16 -messages 20000 -size 256
//	go run ./cmd/mcbench -private-broker -clients 16,64,256,1000 -messages 20000
//
// Several client counts make a sweep: one comparison per count, then a
// table of the ratios, tails, fairness, broker connection memory and the
// gateway's CPU and resident memory. Raw clients each have an AMQP
// connection and channel of their own by default (-raw-conns per-client),
// as separate worker processes have; -raw-conns shared gives them one
// connection with a channel each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

func main() {
	if gatewayChild() {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcbench:", err)
		os.Exit(1)
	}
}

type options struct {
	clientList []int // one comparison per count
	clients    int   // of the comparison under way
	messages   int
	size       int
	queues     int
	rawConns   string
	url        string
	addr       string
	private    bool
	inProcess  bool
	rounds     int
	pubChans   int
	cpuProf    string
	memProf    string
	mutProf    string
	blockProf  string
	sweep      bool
	ackSweep   bool
	noStats    bool
	// ctl reaches the broker's CLI for its memory, connections and CPU;
	// nil: no broker figures.
	ctl ctlFunc
	// name starts the name of every AMQP connection of this run, so that
	// the broker's list tells raw clients and the gateway apart.
	name string
}

func parse(args []string) (options, error) {
	fs := flag.NewFlagSet("mcbench", flag.ContinueOnError)
	var o options
	clients := fs.String("clients", "16", "synchronous clients per workload; a comma-separated list makes a sweep (16,64,256,1000)")
	fs.IntVar(&o.messages, "messages", 20000, "messages per workload (in each row of a sweep)")
	fs.IntVar(&o.size, "size", 256, "message size in bytes")
	fs.IntVar(&o.queues, "queues", 1, "spread the messages over this many queues (at most the smallest client count)")
	fs.StringVar(&o.rawConns, "raw-conns", "per-client", "raw clients' AMQP connections: per-client (a connection and channel each, as separate worker processes have) or shared (one connection, a channel each)")
	fs.StringVar(&o.url, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	fs.BoolVar(&o.private, "private-broker", false, "start a RabbitMQ node of mcbench's own instead of using -amqp (its file-descriptor limit is this process's: needed for 1,000 raw connections where the machine's broker allows 1,024 files)")
	fs.BoolVar(&o.noStats, "no-broker-stats", false, "do not read the broker's memory, connections and CPU with rabbitmqctl (they are read only for the machine's default broker or a -private-broker)")
	fs.StringVar(&o.addr, "addr", "", "gateway address; empty starts one (a child process, or this process when profiling)")
	fs.BoolVar(&o.inProcess, "in-process", false, "run the gateway in this process (implied by the profile flags): no gateway CPU and memory figures")
	fs.IntVar(&o.rounds, "rounds", 1, "repeat the whole comparison (or sweep)")
	fs.IntVar(&o.pubChans, "publish-channels", 0, "gateway publish channels (0: the gateway's default)")
	fs.StringVar(&o.cpuProf, "cpuprofile", "", "write a CPU profile of each gateway workload to `file`.set and file.get (last row of a sweep)")
	fs.StringVar(&o.memProf, "memprofile", "", "write the allocations profile after each gateway workload to `file`.set and file.get (cumulative: compare with pprof -base)")
	fs.StringVar(&o.mutProf, "mutexprofile", "", "write the mutex contention profile after each gateway workload to `file`.set and file.get (cumulative)")
	fs.StringVar(&o.blockProf, "blockprofile", "", "write the blocking profile (where goroutines waited: locks, channels, selects) after each gateway workload to `file`.set and file.get (cumulative)")
	fs.BoolVar(&o.sweep, "publish-sweep", false, "only measure raw publish+confirm over channel layouts and in-flight counts")
	fs.BoolVar(&o.ackSweep, "ack-sweep", false, "only measure a raw consumer acking each message against acking several with multiple")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, f := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-clients %q: want counts of at least 1, separated by commas", *clients)
		}
		o.clientList = append(o.clientList, n)
	}
	o.clients = o.clientList[0]
	most, least := o.clientList[0], o.clientList[0]
	for _, n := range o.clientList {
		most, least = max(most, n), min(least, n)
	}
	switch {
	case o.messages < most || o.size < 16:
		return o, errors.New("need messages >= clients, size >= 16")
	case o.queues < 1 || o.queues > least:
		return o, errors.New("need 1 <= queues <= clients (a raw consumer reads one queue)")
	case o.rawConns != "per-client" && o.rawConns != "shared":
		return o, fmt.Errorf("-raw-conns %q: want per-client or shared", o.rawConns)
	case o.private && o.addr != "":
		return o, errors.New("-private-broker starts its own broker: -addr would name a gateway of another one")
	}
	if o.cpuProf != "" || o.memProf != "" || o.mutProf != "" || o.blockProf != "" {
		o.inProcess = true
	}
	o.name = fmt.Sprintf("mcbench %d", os.Getpid())
	return o, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if o.private {
		url, ctl, stop, err := startPrivateBroker()
		if err != nil {
			return err
		}
		defer stop()
		o.url, o.ctl = url, ctl
	} else if !o.noStats && isLocalDefault(o.url) {
		o.ctl = localCtl
	}
	return bench(ctx, o, out)
}

// isLocalDefault tells whether url names the broker that rabbitmqctl
// reaches without options: the machine's, on the default port. mcbench
// never reads the figures of one broker while measuring another.
func isLocalDefault(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	port := u.Port()
	if port == "" {
		port = "5672"
	}
	ip := net.ParseIP(u.Hostname())
	return port == "5672" && (u.Hostname() == "localhost" || (ip != nil && ip.IsLoopback()))
}

func bench(ctx context.Context, o options, out io.Writer) error {
	if o.mutProf != "" {
		runtime.SetMutexProfileFraction(5)
		defer runtime.SetMutexProfileFraction(0)
	}
	if o.blockProf != "" {
		// A sample per 100µs blocked: the waits that matter are
		// milliseconds.
		runtime.SetBlockProfileRate(int(100 * time.Microsecond))
		defer runtime.SetBlockProfileRate(0)
	}
	if o.sweep {
		return publishSweep(o, out)
	}
	if o.ackSweep {
		return ackSweep(o, out)
	}
	stats := newBrokerStats(o.ctl)
	// The broker's connection memory before the gateway connects: what
	// the gateway's connections hold is measured against it.
	base, err := stats.snapshot()
	if err != nil {
		return fmt.Errorf("broker memory: %w", err)
	}
	gw := &gateway{addr: o.addr}
	where := "at " + o.addr
	switch {
	case o.addr != "":
	case o.inProcess:
		stopGW, a, err := startGateway(o.url, o.pubChans, o.name+" gateway")
		if err != nil {
			return err
		}
		defer stopGW()
		gw.addr, where = a, "in this process"
	default:
		g, err := startGatewayProcess(o.url, o.pubChans, o.name+" gateway")
		if err != nil {
			return err
		}
		defer g.stop()
		gw, where = g, fmt.Sprintf("process %d", g.pid)
	}
	fmt.Fprintf(out, "mcbench: %v clients, %d messages of %d bytes over %d queue(s), persistent, broker %s, gateway %s (%s), raw clients: %s connections\n\n",
		o.clientList, o.messages, o.size, o.queues, redact(o.url), gw.addr, where, o.rawConns)

	var rows []row
	for round := 1; round <= o.rounds; round++ {
		for _, n := range o.clientList {
			o.clients = n
			r, err := compare(ctx, o, gw, stats, base, out, round)
			if err != nil {
				return err
			}
			rows = append(rows, r)
		}
	}
	if len(rows) > 1 {
		printSweep(out, rows)
	}
	return nil
}

// row is one comparison at one client count.
type row struct {
	round, clients int
	// raw publish, raw consume, gateway set, gateway get+delete, raw
	// publish and consume again.
	w [6]result
}

func (r row) rawPub() float64 { return (r.w[0].rate + r.w[4].rate) / 2 }
func (r row) rawCon() float64 { return (r.w[1].rate + r.w[5].rate) / 2 }
func (r row) rawPubP99() time.Duration {
	return (r.w[0].p99 + r.w[4].p99) / 2
}
func (r row) rawConP99() time.Duration {
	return (r.w[1].p99 + r.w[5].p99) / 2
}

// compare runs raw, gateway, raw again, so drift over the run shows.
func compare(ctx context.Context, o options, gw *gateway, stats *brokerStats, base brokerSnapshot, out io.Writer, round int) (row, error) {
	queues := make([]string, o.queues)
	for q := range queues {
		queues[q] = fmt.Sprintf("mcbench.%d.%d.%d", os.Getpid(), time.Now().UnixNano(), q)
	}
	conn, err := dial(o.url, o.name+" admin")
	if err != nil {
		return row{}, fmt.Errorf("dial broker: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return row{}, err
	}
	// The gateway declares the queues (auto_declare), as it would for its
	// users: a classic queue it declared itself is one it may prefetch.
	mc, err := dialMC(gw.addr)
	if err != nil {
		return row{}, fmt.Errorf("dial gateway: %w", err)
	}
	for _, q := range queues {
		v, err := mc.get(q)
		if err != nil || v != nil {
			mc.close()
			return row{}, fmt.Errorf("declare queue %q through the gateway: %v %q", q, err, v)
		}
	}
	mc.close()
	for _, q := range queues {
		if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
			return row{}, fmt.Errorf("queue %q: %w", q, err)
		}
		defer ch.QueueDelete(q, false, false, false)
	}

	// A workload's figures: the broker before it, and the broker and the
	// gateway at its end while its clients are still connected.
	type snap struct {
		mem        brokerSnapshot
		conns      int
		rss, peak  int64
		unreadable bool
	}
	take := func(prefix string) (s snap) {
		var err error
		if s.mem, err = stats.snapshot(); err == nil {
			s.conns = s.mem.connections(prefix)
		}
		if err == nil {
			s.rss, s.peak, err = gw.memory()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mcbench: figures:", err)
			s.unreadable = true
		}
		return s
	}
	var rw row
	rw.round, rw.clients = round, o.clients
	type workload func(m marks) (result, error)
	steps := []struct {
		name    string
		gateway bool
		figures bool // the drift checks run without: their figures repeat the first ones
		f       workload
	}{
		{"raw publish+confirm", false, true, func(m marks) (result, error) { return rawPublish(o, queues, m) }},
		{"raw consume+ack", false, true, func(m marks) (result, error) { return rawConsume(o, queues, m) }},
		{"gateway set", true, true, func(m marks) (result, error) {
			stop := profile(o, "set")
			defer stop()
			return gatewaySet(o, gw.addr, queues, m)
		}},
		{"gateway get+delete", true, true, func(m marks) (result, error) {
			stop := profile(o, "get")
			defer stop()
			return gatewayGetDelete(o, gw.addr, queues, m)
		}},
		{"raw publish+confirm (after)", false, false, func(m marks) (result, error) { return rawPublish(o, queues, m) }},
		{"raw consume+ack (after)", false, false, func(m marks) (result, error) { return rawConsume(o, queues, m) }},
	}
	for i, s := range steps {
		if ctx.Err() != nil {
			return row{}, ctx.Err()
		}
		var before, after snap
		prefix := o.name + " raw"
		if s.gateway {
			prefix = o.name + " gateway"
		}
		if s.figures && stats != nil {
			before = take("")
		}
		// CPU is read when the operations begin and end, so that it
		// leaves out the clients' connecting and closing (a thousand AMQP
		// handshakes would otherwise count against raw's operations).
		var cpu0, cpu1 cpuReading
		m := marks{
			begin: func() { cpu0 = readCPU(stats, gw, s.gateway) },
			end: func() {
				cpu1 = readCPU(stats, gw, s.gateway)
				switch {
				case s.figures && stats != nil:
					after = take(prefix)
				case s.gateway:
					after = take("")
				}
			},
		}
		r, err := s.f(m)
		if err != nil {
			return row{}, fmt.Errorf("%s: %w", s.name, err)
		}
		r.name = s.name
		n := float64(o.messages)
		if s.figures && stats != nil && !before.unreadable && !after.unreadable {
			r.conns = after.conns
			r.memBefore, r.memAfter = before.mem.rss, after.mem.rss
			// Raw clients' connections live only during their workload;
			// the gateway's live all along, so they count from before it
			// connected.
			from := before.mem.conn
			if s.gateway {
				from = base.conn
			}
			r.connMem = after.mem.conn - from
		}
		perOp := func(a, b time.Duration) float64 {
			if a < 0 || b <= a {
				return 0
			}
			return float64((b - a).Microseconds()) / n
		}
		if s.figures {
			r.brokerCPU = perOp(cpu0.broker, cpu1.broker)
		}
		r.clientCPU = perOp(cpu0.clients, cpu1.clients)
		if s.gateway {
			r.gwCPU = perOp(cpu0.gateway, cpu1.gateway)
			if !after.unreadable {
				r.rss, r.peak = after.rss, after.peak
			}
		}
		rw.w[i] = r
	}

	fmt.Fprintf(out, "round %d, %d clients\n%-28s %8s %9s %9s %5s %4s %5s %6s %8s %9s %9s %8s %8s %9s\n", round, o.clients,
		"workload", "msg/s", "p50", "p99", "lost", "dup", "fair", "conns", "connMiB", "brokerRSS", "brokerµs", "gwµs/op", "gwRSSMiB", "clientsµs")
	for _, r := range rw.w {
		fmt.Fprintf(out, "%-28s %8.0f %9s %9s %5d %4d %5.2f %6s %8s %9s %9s %8s %8s %9s\n", r.name, r.rate,
			r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.lost, r.dup, r.fair,
			orDash(r.conns != 0, strconv.Itoa(r.conns)),
			orDash(r.conns != 0, mib(r.connMem)),
			orDash(r.memAfter != 0, mib(r.memBefore)+"→"+mib(r.memAfter)),
			orDash(r.brokerCPU != 0, fmt.Sprintf("%.0f", r.brokerCPU)),
			orDash(r.gwCPU != 0, fmt.Sprintf("%.0f", r.gwCPU)),
			orDash(r.rss != 0, mib(r.rss)),
			orDash(r.clientCPU != 0, fmt.Sprintf("%.0f", r.clientCPU)))
	}
	fmt.Fprintf(out, "ratio set / raw publish:            %.2f\n", rw.w[2].rate/rw.rawPub())
	fmt.Fprintf(out, "ratio get+delete / raw consume:     %.2f\n", rw.w[3].rate/rw.rawCon())
	fmt.Fprintf(out, "p99 added by gateway (set):         %s\n", (rw.w[2].p99 - rw.rawPubP99()).Round(time.Microsecond))
	fmt.Fprintf(out, "p99 added by gateway (get+delete):  %s\n", (rw.w[3].p99 - rw.rawConP99()).Round(time.Microsecond))
	fmt.Fprintf(out, "gets answered END, retried:         %d\n\n", rw.w[3].misses)
	for _, r := range rw.w {
		if r.lost != 0 || r.dup != 0 {
			return row{}, fmt.Errorf("%s: %d lost, %d duplicated", r.name, r.lost, r.dup)
		}
	}
	return rw, nil
}

// printSweep prints one line per comparison: the figures the README's
// performance table shows.
func printSweep(out io.Writer, rows []row) {
	fmt.Fprintf(out, "sweep (raw: the mean of the runs before and after the gateway's; fair: the slowest client's completed operations / the median client's)\n")
	fmt.Fprintf(out, "%5s %7s %6s %8s %17s %17s %11s %11s %9s %13s %11s %10s %9s %15s\n", "round", "clients", "set/raw", "get+del/raw",
		"p99 set gw/raw", "p99 get gw/raw", "fair set", "fair get", "conns", "connMiB", "broker µs/msg", "gw µs", "gwRSSMiB", "all CPU µs/op")
	fmt.Fprintf(out, "%5s %7s %6s %8s %17s %17s %11s %11s %9s %13s %11s %10s %9s %15s\n", "", "", "", "",
		"(ms)", "(ms)", "gw/raw", "gw/raw", "raw/gw", "raw/gw", "pub/set/con/get", "set/get", "peak", "set raw/gw get")
	for _, r := range rows {
		raw, gw := max(r.w[0].conns, r.w[1].conns), max(r.w[2].conns, r.w[3].conns)
		rawMem, gwMem := max(r.w[0].connMem, r.w[1].connMem), max(r.w[2].connMem, r.w[3].connMem)
		fmt.Fprintf(out, "%5d %7d %7.2f %11.2f %8.1f/%-8.1f %8.1f/%-8.1f %5.2f/%-5.2f %5.2f/%-5.2f %4s/%-4s %6s/%-6s %s %10s %9s %15s\n",
			r.round, r.clients, r.w[2].rate/r.rawPub(), r.w[3].rate/r.rawCon(),
			ms(r.w[2].p99), ms(r.rawPubP99()), ms(r.w[3].p99), ms(r.rawConP99()),
			r.w[2].fair, min(r.w[0].fair, r.w[4].fair), r.w[3].fair, min(r.w[1].fair, r.w[5].fair),
			orDash(raw != 0, strconv.Itoa(raw)), orDash(gw != 0, strconv.Itoa(gw)),
			orDash(r.w[0].conns != 0, mib(rawMem)), orDash(r.w[2].conns != 0, mib(gwMem)),
			orDash(r.w[0].brokerCPU != 0, fmt.Sprintf("%.0f/%.0f/%.0f/%.0f", r.w[0].brokerCPU, r.w[2].brokerCPU, r.w[1].brokerCPU, r.w[3].brokerCPU)),
			orDash(r.w[2].gwCPU != 0, fmt.Sprintf("%.0f/%.0f", r.w[2].gwCPU, r.w[3].gwCPU)),
			orDash(r.w[3].peak != 0, mib(max(r.w[2].peak, r.w[3].peak))),
			orDash(r.w[0].allCPU() != 0 && r.w[2].allCPU() != 0 && r.w[1].allCPU() != 0 && r.w[3].allCPU() != 0,
				fmt.Sprintf("%.0f/%.0f %.0f/%.0f", r.w[0].allCPU(), r.w[2].allCPU(), r.w[1].allCPU(), r.w[3].allCPU())))
	}
}

// allCPU is the CPU per operation of every process the workload ran on:
// the broker, the gateway (for a gateway workload) and the benchmark's
// clients; zero when one of them is unknown. All three share the machine's
// cores, so where they are busy the rates follow the inverse of these sums.
func (r result) allCPU() float64 {
	gateway := strings.HasPrefix(r.name, "gateway")
	if r.brokerCPU == 0 || r.clientCPU == 0 || (gateway && r.gwCPU == 0) {
		return 0
	}
	return r.brokerCPU + r.gwCPU + r.clientCPU
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func orDash(ok bool, s string) string {
	if !ok {
		return "-"
	}
	return s
}

type result struct {
	name      string
	rate      float64
	p50, p99  time.Duration
	lost, dup int
	// fair is the slowest client's completed operations over the median
	// client's: 1 when the work was shared evenly.
	fair float64
	// The broker at the workload's end: the workload's AMQP connections
	// and the memory they hold, its resident memory before and after, and
	// its CPU per message (µs). Zero when unknown.
	conns               int
	connMem             int64
	memBefore, memAfter int64
	brokerCPU           float64
	// The gateway process: CPU per operation (µs) and resident memory at
	// the workload's end and at its peak so far.
	gwCPU     float64
	rss, peak int64
	// clientCPU is the benchmark's clients' CPU per operation (µs): raw
	// amqp091-go or memcache clients, all in this process. Zero when
	// unknown (the gateway runs in this process too).
	clientCPU float64
	// misses counts gets answered END although the queue still held a
	// message for this operation (another client's reservation or the
	// gateway's prefetch had it): each is a round trip more.
	misses int64
}

// body is message i padded to size: the consumer reads the index back.
func body(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = 'x'
	}
	copy(b, strconv.Itoa(i)+":")
	return b
}

func index(b []byte) int {
	for j, c := range b {
		if c == ':' {
			n, err := strconv.Atoi(string(b[:j]))
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// parallel runs f(0..n-1), setupParallelism at a time: a thousand AMQP
// handshakes or closes one after the other would take longer than the
// workload.
func parallel(n int, f func(i int)) {
	sem := make(chan struct{}, setupParallelism)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

const setupParallelism = 16

// measure runs worker(client, i) for every message i, spread over the
// clients, each synchronous, and times every operation. m.begin runs once
// every client is set up, m.end when the last operation is done, before
// the clients are closed.
func measure(o options, setup func(client int) (func(i int) error, func(), error), m marks) (result, error) {
	var next atomic.Int64
	lat := make([][]time.Duration, o.clients)
	errs := make(chan error, o.clients)
	var wg sync.WaitGroup
	workers := make([]func(int) error, o.clients)
	closers := make([]func(), o.clients)
	closeAll := func() {
		parallel(o.clients, func(c int) {
			if closers[c] != nil {
				closers[c]()
			}
		})
	}
	parallel(o.clients, func(c int) {
		w, cl, err := setup(c)
		if err != nil {
			errs <- err
			return
		}
		workers[c], closers[c] = w, cl
	})
	select {
	case err := <-errs:
		closeAll()
		return result{}, err
	default:
	}
	m.begin()
	start := time.Now()
	for c := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.messages {
					return
				}
				t0 := time.Now()
				if err := workers[c](i); err != nil {
					errs <- err
					next.Store(int64(o.messages))
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	m.end()
	closeAll()
	select {
	case err := <-errs:
		return result{}, err
	default:
	}
	return summarize(lat, elapsed), nil
}

// summarize turns per-client latencies into the rate, the percentiles and
// the fairness.
func summarize(lat [][]time.Duration, elapsed time.Duration) result {
	var all []time.Duration
	counts := make([]int, len(lat))
	for c, l := range lat {
		all = append(all, l...)
		counts[c] = len(l)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	sort.Ints(counts)
	r := result{rate: float64(len(all)) / elapsed.Seconds()}
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	if med := counts[len(counts)/2]; med > 0 {
		r.fair = float64(counts[0]) / float64(med)
	}
	return r
}

// dial opens an AMQP connection that the broker lists under name.
func dial(url, name string) (*amqp091.Connection, error) {
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName(name)
	return amqp091.DialConfig(url, amqp091.Config{Heartbeat: 10 * time.Second, Locale: "en_US", Properties: props})
}

// rawConns gives raw client c its connection: its own (per-client) or the
// one all share.
type rawConns struct {
	o      options
	shared *amqp091.Connection
}

func newRawConns(o options) (*rawConns, error) {
	r := &rawConns{o: o}
	if o.rawConns == "shared" {
		var err error
		if r.shared, err = dial(o.url, o.name+" raw shared"); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// channel opens client c's channel; release closes it and the client's
// own connection.
func (r *rawConns) channel(c int) (ch *amqp091.Channel, release func(), err error) {
	conn := r.shared
	if conn == nil {
		if conn, err = dial(r.o.url, fmt.Sprintf("%s raw %d", r.o.name, c)); err != nil {
			return nil, nil, err
		}
	}
	if ch, err = conn.Channel(); err != nil {
		if r.shared == nil {
			conn.Close()
		}
		return nil, nil, err
	}
	return ch, func() {
		_ = ch.Close()
		if r.shared == nil {
			_ = conn.Close()
		}
	}, nil
}

func (r *rawConns) close() {
	if r.shared != nil {
		r.shared.Close()
	}
}

// rawPublish: a channel per client in confirm mode, one publish and its
// confirm at a time: what a synchronous AMQP client does. Message i goes
// to queue i mod queues.
func rawPublish(o options, queues []string, m marks) (result, error) {
	conns, err := newRawConns(o)
	if err != nil {
		return result{}, err
	}
	defer conns.close()
	r, err := measure(o, func(c int) (func(int) error, func(), error) {
		ch, release, err := conns.channel(c)
		if err != nil {
			return nil, nil, err
		}
		if err := ch.Confirm(false); err != nil {
			release()
			return nil, nil, err
		}
		return func(i int) error {
			dc, err := ch.PublishWithDeferredConfirm("", queues[i%len(queues)], true, false, amqp091.Publishing{
				DeliveryMode: amqp091.Persistent, Body: body(i, o.size),
			})
			if err != nil {
				return err
			}
			if !dc.Wait() {
				return errors.New("nacked")
			}
			return nil
		}, release, nil
	}, m)
	return r, err
}

// rawConsume: a channel per client with prefetch 1 (client c consumes
// queue c mod queues), consume and ack one at a time, until every message
// was seen. Each consumer keeps going until the last message arrived
// anywhere: with prefetch 1 a consumer that stopped early would sit on a
// message nobody acks. The latency of an operation is from one ack to the
// next delivery.
func rawConsume(o options, queues []string, m marks) (result, error) {
	conns, err := newRawConns(o)
	if err != nil {
		return result{}, err
	}
	defer conns.close()
	seen := newTally(o.messages)
	var received atomic.Int64
	// lastDelivery (unix nanos): at 1,000 consumers with prefetch 1 one
	// consumer may wait long for its turn; the run is stuck only when no
	// consumer received anything for stall.
	var lastDelivery atomic.Int64
	lastDelivery.Store(time.Now().UnixNano())
	const stall = 10 * time.Second
	done := make(chan struct{})
	errs := make(chan error, o.clients)
	lat := make([][]time.Duration, o.clients)
	type consumer struct {
		ch         *amqp091.Channel
		release    func()
		tag        string
		deliveries <-chan amqp091.Delivery
	}
	consumers := make([]consumer, o.clients)
	release := func() {
		parallel(o.clients, func(c int) {
			if cs := consumers[c]; cs.ch != nil {
				_ = cs.ch.Cancel(cs.tag, false)
				cs.release()
			}
		})
	}
	parallel(o.clients, func(c int) {
		ch, rel, err := conns.channel(c)
		if err != nil {
			errs <- err
			return
		}
		tag := fmt.Sprintf("mcbench-%d", c)
		var deliveries <-chan amqp091.Delivery
		if err = ch.Qos(1, 0, false); err == nil {
			deliveries, err = ch.Consume(queues[c%len(queues)], tag, false, false, false, false, nil)
		}
		if err != nil {
			rel()
			errs <- err
			return
		}
		consumers[c] = consumer{ch, rel, tag, deliveries}
	})
	select {
	case err := <-errs:
		release()
		return result{}, err
	default:
	}
	m.begin()
	start := time.Now()
	var wg sync.WaitGroup
	for c, cs := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := time.Now()
			for {
				select {
				case d, ok := <-cs.deliveries:
					if !ok {
						return
					}
					lat[c] = append(lat[c], time.Since(last))
					lastDelivery.Store(time.Now().UnixNano())
					seen.add(index(d.Body))
					if err := d.Ack(false); err != nil {
						errs <- err
						return
					}
					last = time.Now()
					if received.Add(1) == int64(o.messages) {
						close(done)
					}
				case <-done:
					return
				case <-time.After(stall):
					if time.Since(time.Unix(0, lastDelivery.Load())) < stall {
						continue // others are served: wait for our turn
					}
					errs <- fmt.Errorf("no delivery to any consumer within %v (%d of %d received)", stall, received.Load(), o.messages)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	m.end()
	release()
	select {
	case err := <-errs:
		return result{}, err
	default:
	}
	// One latency per delivery received: the rate counts them all.
	r := summarize(lat, elapsed)
	r.lost, r.dup = seen.check()
	return r, nil
}

// gatewaySet: a memcache connection per client, one set at a time.
func gatewaySet(o options, addr string, queues []string, m marks) (result, error) {
	r, err := measure(o, func(int) (func(int) error, func(), error) {
		c, err := dialMC(addr)
		if err != nil {
			return nil, nil, err
		}
		return func(i int) error {
			b := body(i, o.size)
			reply, err := c.set(queues[i%len(queues)], b)
			if err != nil {
				return err
			}
			if reply != "STORED" {
				return fmt.Errorf("set: %s", reply)
			}
			return nil
		}, c.close, nil
	}, m)
	return r, err
}

// gatewayGetDelete: a memcache connection per client, get then delete.
// Operation i reads queue i mod queues, which holds as many messages as
// operations will read it.
func gatewayGetDelete(o options, addr string, queues []string, m marks) (result, error) {
	seen := newTally(o.messages)
	var misses atomic.Int64
	r, err := measure(o, func(int) (func(int) error, func(), error) {
		c, err := dialMC(addr)
		if err != nil {
			return nil, nil, err
		}
		return func(i int) error {
			queue := queues[i%len(queues)]
			// A get that finds nothing asks again: 30 s of that while
			// the queue holds its message fails the run (starvation).
			deadline := time.Now().Add(30 * time.Second)
			for {
				value, err := c.get(queue)
				if err != nil {
					return err
				}
				if value != nil {
					seen.add(index(value))
					break
				}
				misses.Add(1)
				if time.Now().After(deadline) {
					return errors.New("gets found nothing for 30s while the queue held a message for them")
				}
			}
			reply, err := c.delete(queue)
			if err != nil {
				return err
			}
			if reply != "DELETED" {
				return fmt.Errorf("delete: %s", reply)
			}
			return nil
		}, c.close, nil
	}, m)
	r.lost, r.dup = seen.check()
	r.misses = misses.Load()
	return r, err
}

// tally counts receipts per message index.
type tally struct {
	mu sync.Mutex
	n  []int
}

func newTally(n int) *tally { return &tally{n: make([]int, n)} }

func (t *tally) add(i int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i >= 0 && i < len(t.n) {
		t.n[i]++
	}
}

func (t *tally) check() (lost, dup int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.n {
		switch {
		case c == 0:
			lost++
		case c > 1:
			dup += c - 1
		}
	}
	return lost, dup
}

// profile starts the CPU profile of workload name, if asked for; stop ends
// it and writes the allocations and mutex profiles asked for. A profile
// that cannot be written is reported and skipped: the measurement goes on.
func profile(o options, name string) (stop func()) {
	var cpu *os.File
	if o.cpuProf != "" {
		f, err := os.Create(o.cpuProf + "." + name)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mcbench: cpu profile:", err)
		} else {
			cpu = f
		}
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			cpu.Close()
		}
		writeProfile("allocs", o.memProf, name)
		writeProfile("mutex", o.mutProf, name)
		writeProfile("block", o.blockProf, name)
	}
}

func writeProfile(kind, file, name string) {
	if file == "" {
		return
	}
	f, err := os.Create(file + "." + name)
	if err == nil {
		err = pprof.Lookup(kind).WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcbench: %s profile: %v\n", kind, err)
	}
}

func redact(raw string) string {
	u, err := amqp091.ParseURI(raw)
	if err != nil {
		return "?"
	}
	u.Password = "xxxxx"
	return u.String()
}

// marks are a workload's hooks: begin runs when its clients are connected
// and its first operation is about to start, end when its last operation
// is done, before the clients are closed.
type marks struct{ begin, end func() }

// cpuReading is the CPU time used so far by the broker, the gateway and
// this process (the benchmark's clients); -1 where unknown.
type cpuReading struct{ broker, gateway, clients time.Duration }

// readCPU reads the processes' CPU from /proc: the broker's if it runs on
// this machine, the gateway's if it is a child process, and this process's
// if it holds only the clients (not an in-process gateway serving a
// gateway workload).
func readCPU(stats *brokerStats, gw *gateway, gatewayWorkload bool) cpuReading {
	r := cpuReading{-1, -1, -1}
	read := func(pid int) time.Duration {
		d, err := procCPU(pid)
		if err != nil {
			return -1
		}
		return d
	}
	if stats != nil && stats.pid != 0 {
		r.broker = read(stats.pid)
	}
	if gw.pid != 0 {
		r.gateway = read(gw.pid)
	}
	if gw.pid != 0 || !gatewayWorkload {
		r.clients = read(os.Getpid())
	}
	return r
}
