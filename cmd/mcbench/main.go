// Command mcbench measures mcbridge against raw amqp091-go in one run, on
// the same broker, at the same concurrency: publish+confirm versus set, and
// consume+ack versus get+delete. It checks that every message was received
// exactly once and fails when one was lost or duplicated.
//
//	go run ./cmd/mcbench -clients 16 -messages 20000 -size 256
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcbench:", err)
		os.Exit(1)
	}
}

type options struct {
	clients  int
	messages int
	size     int
	url      string
	addr     string
	rounds   int
	pubChans int
	cpuProf  string
	memProf  string
	mutProf  string
	sweep    bool
	ackSweep bool
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("mcbench", flag.ContinueOnError)
	var o options
	fs.IntVar(&o.clients, "clients", 16, "synchronous clients per workload")
	fs.IntVar(&o.messages, "messages", 20000, "messages per workload")
	fs.IntVar(&o.size, "size", 256, "message size in bytes")
	fs.StringVar(&o.url, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	fs.StringVar(&o.addr, "addr", "", "gateway address; empty starts one in this process")
	fs.IntVar(&o.rounds, "rounds", 1, "repeat the whole comparison")
	fs.IntVar(&o.pubChans, "publish-channels", 0, "gateway publish channels (0: the gateway's default)")
	fs.StringVar(&o.cpuProf, "cpuprofile", "", "write a CPU profile of each gateway workload to `file`.set and file.get")
	fs.StringVar(&o.memProf, "memprofile", "", "write the allocations profile after each gateway workload to `file`.set and file.get (cumulative: compare with pprof -base)")
	fs.StringVar(&o.mutProf, "mutexprofile", "", "write the mutex contention profile after each gateway workload to `file`.set and file.get (cumulative)")
	fs.BoolVar(&o.sweep, "publish-sweep", false, "only measure raw publish+confirm over channel layouts and in-flight counts")
	fs.BoolVar(&o.ackSweep, "ack-sweep", false, "only measure a raw consumer acking each message against acking several with multiple")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.mutProf != "" {
		runtime.SetMutexProfileFraction(5)
		defer runtime.SetMutexProfileFraction(0)
	}
	if o.clients < 1 || o.messages < o.clients || o.size < 16 {
		return errors.New("need clients >= 1, messages >= clients, size >= 16")
	}

	if o.sweep {
		return publishSweep(o, out)
	}
	if o.ackSweep {
		return ackSweep(o, out)
	}
	addr := o.addr
	if addr == "" {
		stopGW, a, err := startGateway(o.url, o.pubChans)
		if err != nil {
			return err
		}
		defer stopGW()
		addr = a
	}
	fmt.Fprintf(out, "mcbench: %d clients, %d messages of %d bytes, persistent, broker %s, gateway %s\n\n",
		o.clients, o.messages, o.size, redact(o.url), addr)

	for round := 1; round <= o.rounds; round++ {
		if err := compare(ctx, o, addr, out, round); err != nil {
			return err
		}
	}
	return nil
}

// compare runs raw, gateway, raw again, so drift over the run shows.
func compare(ctx context.Context, o options, addr string, out io.Writer, round int) error {
	queue := fmt.Sprintf("mcbench.%d.%d", os.Getpid(), time.Now().UnixNano())
	conn, err := amqp091.Dial(o.url)
	if err != nil {
		return fmt.Errorf("dial broker: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	// The gateway declares the queue (auto_declare), as it would for its
	// users: a classic queue it declared itself is one it may prefetch.
	mc, err := dialMC(addr)
	if err != nil {
		return fmt.Errorf("dial gateway: %w", err)
	}
	v, err := mc.get(queue)
	mc.close()
	if err != nil || v != nil {
		return fmt.Errorf("declare queue %q through the gateway: %v %q", queue, err, v)
	}
	if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("queue %q: %w", queue, err)
	}
	defer ch.QueueDelete(queue, false, false, false)

	var results []result
	step := func(name string, f func() (result, error)) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r, err := f()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		r.name = name
		results = append(results, r)
		return nil
	}
	steps := []struct {
		name string
		f    func() (result, error)
	}{
		{"raw publish+confirm", func() (result, error) { return rawPublish(o, queue) }},
		{"raw consume+ack", func() (result, error) { return rawConsume(o, queue) }},
		{"gateway set", func() (result, error) {
			stop := profile(o, "set")
			defer stop()
			return gatewaySet(o, addr, queue)
		}},
		{"gateway get+delete", func() (result, error) {
			stop := profile(o, "get")
			defer stop()
			return gatewayGetDelete(o, addr, queue)
		}},
		{"raw publish+confirm (after)", func() (result, error) { return rawPublish(o, queue) }},
		{"raw consume+ack (after)", func() (result, error) { return rawConsume(o, queue) }},
	}
	for _, s := range steps {
		if err := step(s.name, s.f); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "round %d\n%-30s %10s %10s %10s %6s %6s\n", round, "workload", "msg/s", "p50", "p99", "lost", "dup")
	for _, r := range results {
		fmt.Fprintf(out, "%-30s %10.0f %10s %10s %6d %6d\n", r.name, r.rate, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.lost, r.dup)
	}
	rawPub := (results[0].rate + results[4].rate) / 2
	rawCon := (results[1].rate + results[5].rate) / 2
	fmt.Fprintf(out, "ratio set / raw publish:            %.2f\n", results[2].rate/rawPub)
	fmt.Fprintf(out, "ratio get+delete / raw consume:     %.2f\n", results[3].rate/rawCon)
	fmt.Fprintf(out, "p99 added by gateway (set):         %s\n", (results[2].p99 - (results[0].p99+results[4].p99)/2).Round(time.Microsecond))
	fmt.Fprintf(out, "p99 added by gateway (get+delete):  %s\n\n", (results[3].p99 - (results[1].p99+results[5].p99)/2).Round(time.Microsecond))
	for _, r := range results {
		if r.lost != 0 || r.dup != 0 {
			return fmt.Errorf("%s: %d lost, %d duplicated", r.name, r.lost, r.dup)
		}
	}
	return nil
}

type result struct {
	name      string
	rate      float64
	p50, p99  time.Duration
	lost, dup int
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

// measure runs worker(client, i) for every message i, spread over the
// clients, each synchronous, and times every operation.
func measure(o options, setup func(client int) (func(i int) error, func(), error)) (result, error) {
	var next atomic.Int64
	lat := make([][]time.Duration, o.clients)
	errs := make(chan error, o.clients)
	var wg sync.WaitGroup
	workers := make([]func(int) error, o.clients)
	closers := make([]func(), o.clients)
	for c := range o.clients {
		w, cl, err := setup(c)
		if err != nil {
			for _, f := range closers[:c] {
				f()
			}
			return result{}, err
		}
		workers[c], closers[c] = w, cl
	}
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
	for _, f := range closers {
		f()
	}
	select {
	case err := <-errs:
		return result{}, err
	default:
	}
	return summarize(lat, elapsed), nil
}

// summarize turns per-client latencies into the rate and percentiles.
func summarize(lat [][]time.Duration, elapsed time.Duration) result {
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r := result{rate: float64(len(all)) / elapsed.Seconds()}
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return r
}

// rawPublish: a channel per client in confirm mode, one publish and its
// confirm at a time: what a synchronous AMQP client does.
func rawPublish(o options, queue string) (result, error) {
	conn, err := amqp091.Dial(o.url)
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	r, err := measure(o, func(int) (func(int) error, func(), error) {
		ch, err := conn.Channel()
		if err != nil {
			return nil, nil, err
		}
		if err := ch.Confirm(false); err != nil {
			return nil, nil, err
		}
		return func(i int) error {
			dc, err := ch.PublishWithDeferredConfirm("", queue, true, false, amqp091.Publishing{
				DeliveryMode: amqp091.Persistent, Body: body(i, o.size),
			})
			if err != nil {
				return err
			}
			if !dc.Wait() {
				return errors.New("nacked")
			}
			return nil
		}, func() { ch.Close() }, nil
	})
	return r, err
}

// rawConsume: a channel per client with prefetch 1, consume and ack one at
// a time, until every message was seen. Each consumer keeps going until
// the last message arrived anywhere: with prefetch 1 a consumer that
// stopped early would sit on a message nobody acks. The latency of an
// operation is from one ack to the next delivery.
func rawConsume(o options, queue string) (result, error) {
	conn, err := amqp091.Dial(o.url)
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	seen := newTally(o.messages)
	var received atomic.Int64
	done := make(chan struct{})
	errs := make(chan error, o.clients)
	lat := make([][]time.Duration, o.clients)
	type consumer struct {
		ch         *amqp091.Channel
		tag        string
		deliveries <-chan amqp091.Delivery
	}
	consumers := make([]consumer, o.clients)
	for c := range o.clients {
		ch, err := conn.Channel()
		if err != nil {
			return result{}, err
		}
		if err := ch.Qos(1, 0, false); err != nil {
			return result{}, err
		}
		tag := fmt.Sprintf("mcbench-%d", c)
		deliveries, err := ch.Consume(queue, tag, false, false, false, false, nil)
		if err != nil {
			return result{}, err
		}
		consumers[c] = consumer{ch, tag, deliveries}
	}
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
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("no delivery within 10s (%d of %d received)", received.Load(), o.messages)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, cs := range consumers {
		_ = cs.ch.Cancel(cs.tag, false)
		_ = cs.ch.Close()
	}
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
func gatewaySet(o options, addr, queue string) (result, error) {
	r, err := measure(o, func(int) (func(int) error, func(), error) {
		c, err := dialMC(addr)
		if err != nil {
			return nil, nil, err
		}
		return func(i int) error {
			b := body(i, o.size)
			reply, err := c.roundTrip(fmt.Appendf(nil, "set %s 0 0 %d\r\n%s\r\n", queue, len(b), b))
			if err != nil {
				return err
			}
			if reply != "STORED" {
				return fmt.Errorf("set: %s", reply)
			}
			return nil
		}, c.close, nil
	})
	return r, err
}

// gatewayGetDelete: a memcache connection per client, get then delete.
func gatewayGetDelete(o options, addr, queue string) (result, error) {
	seen := newTally(o.messages)
	r, err := measure(o, func(int) (func(int) error, func(), error) {
		c, err := dialMC(addr)
		if err != nil {
			return nil, nil, err
		}
		return func(int) error {
			deadline := time.Now().Add(10 * time.Second)
			for {
				value, err := c.get(queue)
				if err != nil {
					return err
				}
				if value != nil {
					seen.add(index(value))
					break
				}
				if time.Now().After(deadline) {
					return errors.New("queue stayed empty for 10s")
				}
			}
			reply, err := c.roundTrip([]byte("delete " + queue + "\r\n"))
			if err != nil {
				return err
			}
			if reply != "DELETED" {
				return fmt.Errorf("delete: %s", reply)
			}
			return nil
		}, c.close, nil
	})
	r.lost, r.dup = seen.check()
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

// startGateway runs mcbridge in this process on a free port.
func startGateway(url string, publishChannels int) (stop func(), addr string, err error) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	log := slog.New(slog.DiscardHandler)
	obs := bridge.NewObserver(nil)
	broker := amqp.New(amqp.Options{URLs: []string{url}, ConnectionName: "mcbench", Observer: obs, Logger: log, PublishChannels: publishChannels})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := broker.Start(ctx); err != nil {
		return nil, "", err
	}
	if err := broker.Ready(); err != nil {
		broker.Close()
		return nil, "", err
	}
	srv := bridge.New(cfg, broker, obs, bridge.Options{Logger: log})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		broker.Close()
		return nil, "", err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
		broker.Close()
	}, ln.Addr().String(), nil
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
