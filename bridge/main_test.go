package bridge

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestMain(m *testing.M) {
	testbroker.MustReach()
	goleak.VerifyTestMain(m)
}

// gateway is a running mcbridge wired to the real broker, for one test.
type gateway struct {
	t      testing.TB
	cfg    *config.Config
	srv    *Server
	broker *amqp.Client
	addr   string
	done   chan error
}

// testLogger prints gateway logs only when MCBRIDGE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MCBRIDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is the default config listening on a free port.
func testConfig() *config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	return cfg
}

// startGateway starts a gateway on cfg (nil: testConfig()) and stops it,
// gracefully, when the test ends.
func startGateway(t testing.TB, cfg *config.Config) *gateway {
	t.Helper()
	if cfg == nil {
		cfg = testConfig()
	}
	obs := NewObserver(nil)
	urls := make([]string, len(cfg.AMQP.URLs))
	for i, u := range cfg.AMQP.URLs {
		urls[i] = u.Raw()
	}
	broker := amqp.New(amqp.Options{
		URLs:               urls,
		ConnectionName:     "mcbridge-test " + t.Name(),
		ConsumeConnections: cfg.AMQP.ConsumeConnections,
		ConfirmTimeout:     cfg.AMQP.ConfirmTimeout,
		Topology:           Topology(cfg),
		Observer:           obs,
		Logger:             testLogger(),
		MinBackoff:         20 * time.Millisecond,
		MaxBackoff:         500 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := broker.Start(ctx); err != nil {
		t.Fatalf("start broker client: %v", err)
	}
	srv := New(cfg, broker, obs, Options{Logger: testLogger()})
	ln, err := srv.Listen()
	if err != nil {
		broker.Close()
		t.Fatalf("listen: %v", err)
	}
	g := &gateway{t: t, cfg: cfg, srv: srv, broker: broker, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { g.done <- srv.Serve(ln) }()
	t.Cleanup(g.stop)
	return g
}

// stop shuts the gateway down; safe to call twice.
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

// client is a raw memcache text-protocol connection that checks exact
// bytes.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func (g *gateway) dial() *client {
	g.t.Helper()
	return dialClient(g.t, g.addr)
}

func dialClient(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// send writes raw bytes.
func (c *client) send(s string) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("send %q: %v", trim(s), err)
	}
}

// expect reads exactly len(want) bytes and compares.
func (c *client) expect(want string) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	got := make([]byte, len(want))
	n, err := io.ReadFull(c.r, got)
	if err != nil {
		c.t.Fatalf("reading reply: want %q, got %q: %v", trim(want), trim(string(got[:n])), err)
	}
	if string(got) != want {
		c.t.Fatalf("reply mismatch:\n want %q\n  got %q", trim(want), trim(string(got)))
	}
}

// do sends a command and expects its exact reply.
func (c *client) do(cmd, want string) {
	c.t.Helper()
	c.send(cmd)
	c.expect(want)
}

// line reads one reply line without its CR LF.
func (c *client) line() string {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading line: got %q: %v", s, err)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// expectClosed asserts the server closed the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		c.t.Fatalf("connection still open: read %q", b)
	}
	if err != io.EOF && !isReset(err) {
		c.t.Fatalf("want EOF, got %v", err)
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// synced proves the connection still parses commands in step.
func (c *client) synced() {
	c.t.Helper()
	c.do("version\r\n", "VERSION "+Version+"\r\n")
}

func (c *client) close() { c.nc.Close() }

func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
