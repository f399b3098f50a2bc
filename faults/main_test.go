// Package faults proves mcbridge's at-least-once promise under injected
// faults: broker connections cut, stalled or closed by the broker, lost
// confirms, memory alarms, slow and hostile clients, TLS on both sides. The
// gateway runs in-process, talking to the real RabbitMQ through a proxy that
// the tests control.
package faults

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestMain(m *testing.M) {
	testbroker.MustReach()
	goleak.VerifyTestMain(m)
}

// gwOptions are the knobs of a test gateway beyond its config.
type gwOptions struct {
	// urls replace cfg.AMQP.URLs (e.g. the proxy's address).
	urls            []string
	heartbeat       time.Duration
	publishChannels int
	brokerTLS       *tls.Config
	listenTLS       *tls.Config
	logs            io.Writer
	// name is the AMQP connection name prefix (default: a unique one).
	name string
}

// gateway is a running mcbridge wired like cmd/mcbridge, for one test.
type gateway struct {
	t      testing.TB
	cfg    *config.Config
	srv    *bridge.Server
	broker *amqp.Client
	addr   string
	name   string // AMQP connection name prefix
	reg    *prometheus.Registry
	done   chan error
}

func testConfig() *config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	return cfg
}

// uniqueName is an AMQP connection name that only this gateway uses.
func uniqueName(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "mcbridge-faults-" + hex.EncodeToString(b[:])
}

// publishConnName is what amqp names the publishing connection.
func publishConnName(name string) string { return name + " " + string(amqp.RolePublish) + " 0" }

func startGateway(t testing.TB, cfg *config.Config, o gwOptions) *gateway {
	t.Helper()
	if cfg == nil {
		cfg = testConfig()
	}
	urls := o.urls
	if urls == nil {
		for _, u := range cfg.AMQP.URLs {
			urls = append(urls, u.Raw())
		}
	}
	var log *slog.Logger
	switch {
	case o.logs != nil:
		log = slog.New(slog.NewTextHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	case os.Getenv("MCBRIDGE_TEST_LOG") != "":
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	default:
		log = slog.New(slog.DiscardHandler)
	}
	name := o.name
	if name == "" {
		name = uniqueName(t)
	}
	reg := prometheus.NewRegistry()
	obs := bridge.NewObserver(reg)
	broker := amqp.New(amqp.Options{
		URLs:               urls,
		ConnectionName:     name,
		ConsumeConnections: cfg.AMQP.ConsumeConnections,
		PublishChannels:    o.publishChannels,
		ConfirmTimeout:     cfg.AMQP.ConfirmTimeout,
		Heartbeat:          o.heartbeat,
		TLS:                o.brokerTLS,
		Topology:           bridge.Topology(cfg),
		Observer:           obs,
		Logger:             log.With("component", "amqp"),
		MinBackoff:         20 * time.Millisecond,
		MaxBackoff:         400 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := broker.Start(ctx); err != nil {
		t.Fatalf("start broker client: %v", err)
	}
	srv := bridge.New(cfg, broker, obs, bridge.Options{Logger: log})
	ln, err := srv.Listen()
	if err != nil {
		broker.Close()
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if o.listenTLS != nil {
		// As cmd/mcbridge does with a tls section.
		ln = tls.NewListener(ln, o.listenTLS)
	}
	g := &gateway{t: t, cfg: cfg, srv: srv, broker: broker, addr: addr, name: name, reg: reg, done: make(chan error, 1)}
	go func() { g.done <- srv.Serve(ln) }()
	t.Cleanup(g.stop)
	return g
}

func (g *gateway) stop() {
	if g.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err != nil {
		g.t.Errorf("shutdown: %v", err)
	}
	if err := <-g.done; err != nil {
		g.t.Errorf("serve: %v", err)
	}
	g.broker.Close()
	g.srv = nil
}

// waitReady waits for every broker connection to be up, and returns how
// long that took.
func (g *gateway) waitReady(within time.Duration) time.Duration {
	g.t.Helper()
	start := time.Now()
	testbroker.Eventually(g.t, within, "the gateway to be ready", func() bool { return g.broker.Ready() == nil })
	return time.Since(start)
}

// mc is a raw memcache text-protocol client. Its methods return errors
// instead of failing the test, so that load goroutines can use them.
type mc struct {
	nc net.Conn
	r  *bufio.Reader
}

func dialMC(addr string) (*mc, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &mc{nc: nc, r: bufio.NewReader(nc)}, nil
}

// mustDial is dialMC for the test goroutine.
func mustDial(t testing.TB, addr string) *mc {
	t.Helper()
	c, err := dialMC(addr)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	t.Cleanup(c.close)
	return c
}

func (c *mc) close() { c.nc.Close() }

const ioTimeout = 15 * time.Second

func (c *mc) send(s string) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := io.WriteString(c.nc, s)
	return err
}

func (c *mc) line() (string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	s, err := c.r.ReadString('\n')
	if err != nil {
		return s, err
	}
	return strings.TrimSuffix(s, "\r\n"), nil
}

// roundTrip sends a command and returns its one-line reply.
func (c *mc) roundTrip(cmd string) (string, error) {
	if err := c.send(cmd); err != nil {
		return "", err
	}
	return c.line()
}

func (c *mc) set(key, value string) (string, error) {
	return c.roundTrip(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(value), value))
}

// get reserves one message: hit, value. A SERVER_ERROR is returned as an
// error whose text is the reply.
func (c *mc) get(key string) (bool, string, error) {
	if err := c.send("get " + key + "\r\n"); err != nil {
		return false, "", err
	}
	return c.readValue()
}

func (c *mc) readValue() (bool, string, error) {
	l, err := c.line()
	if err != nil {
		return false, "", err
	}
	switch {
	case l == "END":
		return false, "", nil
	case strings.HasPrefix(l, "VALUE "):
		f := strings.Fields(l)
		if len(f) < 4 {
			return false, "", fmt.Errorf("bad VALUE line %q", l)
		}
		n, err := strconv.Atoi(f[3])
		if err != nil {
			return false, "", fmt.Errorf("bad VALUE line %q", l)
		}
		data := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return false, "", err
		}
		end, err := c.line()
		if err != nil {
			return false, "", err
		}
		if end != "END" {
			return false, "", fmt.Errorf("want END after the value, got %q", end)
		}
		return true, string(data[:n]), nil
	}
	return false, "", replyError(l)
}

// replyError is a reply that is not the expected one, e.g. SERVER_ERROR.
type replyError string

func (e replyError) Error() string { return string(e) }

func (c *mc) del(key string) (string, error) { return c.roundTrip("delete " + key + "\r\n") }

// stats returns `stats <args>` as a map.
func (c *mc) stats(args string) (map[string]string, error) {
	cmd := "stats\r\n"
	if args != "" {
		cmd = "stats " + args + "\r\n"
	}
	if err := c.send(cmd); err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for {
		l, err := c.line()
		if err != nil {
			return nil, err
		}
		if l == "END" {
			return out, nil
		}
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 || f[0] != "STAT" {
			return nil, fmt.Errorf("bad stats line %q", l)
		}
		out[f[1]] = f[2]
	}
}

// expect checks a one-line reply: expect(t, "set", "STORED")(c.set(k, v)).
func expect(t testing.TB, what, wantReply string) func(string, error) {
	return func(got string, err error) {
		t.Helper()
		want(t, what, got, err, wantReply)
	}
}

// want checks a one-line reply.
func want(t testing.TB, what string, got string, err error, wantReply string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != wantReply {
		t.Fatalf("%s: got %q, want %q", what, got, wantReply)
	}
}

// queueDepth is the ready count of q as the broker sees it.
func queueDepth(t testing.TB, q string) int {
	t.Helper()
	ch := testbroker.Channel(t)
	defer ch.Close()
	qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect queue %s: %v", q, err)
	}
	return qi.Messages
}

// logSink collects a gateway's log for assertions.
type logSink struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// metric sums the samples of a counter or gauge whose labels include the
// given ones (name=value pairs).
func (g *gateway) metric(name string, labels ...string) float64 {
	g.t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		g.t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}
