// Package testserve is the part of an in-process test gateway that does not
// need package bridge: the default test config, the test logger, the broker
// client's options, and serving with a graceful shutdown when the test ends.
//
// bridge's own tests are package bridge and use unexported fields, so they
// cannot import testgateway (which imports bridge); they wire their gateway
// with this package. Every other package uses testgateway, which is built
// on it, so that all test gateways are wired alike.
package testserve

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// Config is the default config on a free port, against the test binary's
// private broker node (testbroker.URL), without the metrics HTTP listener
// (tests read metrics from the registry).
func Config() *config.Config {
	if testbroker.URL == "" {
		panic("testserve.Config: no private broker node: the package's TestMain must call testbroker.Main(m)")
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	cfg.AMQP.URLs = []config.URL{config.URL(testbroker.URL)}
	return cfg
}

// Logger is a debug logger writing text to w. With w nil it prints to
// stderr only when MCBRIDGE_TEST_LOG is set, so that passing tests stay
// quiet and a failing one can be rerun with the gateway's story.
func Logger(w io.Writer) *slog.Logger {
	if w == nil && os.Getenv("MCBRIDGE_TEST_LOG") != "" {
		w = os.Stderr
	}
	if w == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// BrokerOptions are the broker client options of cfg as cmd/mcbridge sets
// them, under the AMQP connection name name, with short reconnect backoffs
// so that fault tests recover in well under a second. The caller adds the
// Topology and Observer, which come from bridge.
func BrokerOptions(cfg *config.Config, name string, log *slog.Logger) amqp.Options {
	urls := make([]string, len(cfg.AMQP.URLs))
	for i, u := range cfg.AMQP.URLs {
		urls[i] = u.Raw()
	}
	return amqp.Options{
		URLs:               urls,
		ConnectionName:     name,
		ConsumeConnections: cfg.AMQP.ConsumeConnections,
		ConfirmTimeout:     cfg.AMQP.ConfirmTimeout,
		Logger:             log.With("component", "amqp"),
		MinBackoff:         20 * time.Millisecond,
		MaxBackoff:         400 * time.Millisecond,
	}
}

// StartBroker connects a broker client, failing the test unless every
// connection is up within 20s. URLs that reach the machine's broker fail
// the test at once (testbroker.MustBePrivate).
func StartBroker(t testing.TB, o amqp.Options) *amqp.Client {
	t.Helper()
	testbroker.MustBePrivate(t, o.URLs)
	return StartClient(t, amqp.New(o))
}

// StartClient is StartBroker for a client already made by amqp.New, for a
// test that needs the client before it starts.
func StartClient(t testing.TB, broker *amqp.Client) *amqp.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := broker.Start(ctx); err != nil {
		t.Fatalf("start broker client: %v", err)
	}
	return broker
}

// Server is what Serve runs: a *bridge.Server.
type Server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// Serve runs srv on ln and returns stop, which shuts srv down gracefully,
// checks what Serve returned and then closes broker. stop also runs when
// the test ends, so that no goroutine outlives it (goleak checks); calls
// after the first do nothing.
func Serve(t testing.TB, srv Server, ln net.Listener, broker *amqp.Client) (stop func()) {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		broker.Close()
	}
	t.Cleanup(stop)
	return stop
}

// LogBuffer collects a gateway's (or a broker client's) log for
// assertions; its goroutines write while the test reads.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
