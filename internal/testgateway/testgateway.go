// Package testgateway runs an in-process mcbridge, wired as cmd/mcbridge
// wires it, against the test binary's private broker node for one test:
// the faults, clients and cmd tests all start their gateways here, so that
// they test the same wiring. (bridge's own tests cannot import it; see
// testserve.)
package testgateway

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
)

// Options are the knobs of a test gateway beyond its config; the zero
// value is a gateway as cmd/mcbridge runs cfg.
type Options struct {
	// URLs replace cfg.AMQP.URLs (e.g. a fault-injecting proxy's).
	URLs []string
	// ConnectionName is the AMQP connection name prefix; by default a
	// unique one (UniqueName), so that a test can find and close exactly
	// this gateway's connections in the broker.
	ConnectionName  string
	Heartbeat       time.Duration
	PublishChannels int
	// BrokerTLS is used for amqps:// URLs.
	BrokerTLS *tls.Config
	// ListenTLS wraps the memcache listener, as a tls section does.
	ListenTLS *tls.Config
	// Logs receives the gateway's debug log (default: see
	// testserve.Logger).
	Logs io.Writer
	// LogAttrs are added to every line of that log (e.g. "gateway", name,
	// to tell several gateways of one test apart).
	LogAttrs []any
	// Observer, if set, is what the broker client reports to instead of the
	// metrics observer: a wrapper that records connection events and
	// passes them on to metrics. The server still reports to metrics.
	Observer func(metrics *bridge.Observer) amqp.Observer
	// BeforeStart, if set, is called with the broker client after it is
	// made and before it connects (e.g. to give it to the Observer).
	BeforeStart func(*amqp.Client)
}

// Gateway is a running gateway. It stops gracefully when the test ends.
type Gateway struct {
	// Addr is the memcache listener's address.
	Addr string
	// Name is the AMQP connection name prefix.
	Name     string
	Config   *config.Config
	Broker   *amqp.Client
	Server   *bridge.Server
	Registry *prometheus.Registry

	t    testing.TB
	stop func()
}

// Config is the default config on a free port, without metrics HTTP.
func Config() *config.Config { return testserve.Config() }

// UniqueName is an AMQP connection name that no other gateway uses.
func UniqueName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "mcbridge-test-" + hex.EncodeToString(b[:])
}

// Start starts a gateway on cfg (nil: Config()); the test fails if its
// broker client does not start within 20s.
func Start(t testing.TB, cfg *config.Config, o Options) *Gateway {
	t.Helper()
	if cfg == nil {
		cfg = Config()
	}
	name := o.ConnectionName
	if name == "" {
		name = UniqueName()
	}
	log := testserve.Logger(o.Logs)
	if len(o.LogAttrs) > 0 {
		log = log.With(o.LogAttrs...)
	}
	reg := prometheus.NewRegistry()
	obs := bridge.NewObserver(reg)
	bo := testserve.BrokerOptions(cfg, name, log)
	if o.URLs != nil {
		bo.URLs = o.URLs
	}
	bo.PublishChannels = o.PublishChannels
	bo.Heartbeat = o.Heartbeat
	bo.TLS = o.BrokerTLS
	bo.Topology = bridge.Topology(cfg)
	bo.Observer = obs
	if o.Observer != nil {
		bo.Observer = o.Observer(obs)
	}
	testbroker.MustBePrivate(t, bo.URLs)
	broker := amqp.New(bo)
	if o.BeforeStart != nil {
		o.BeforeStart(broker)
	}
	testserve.StartClient(t, broker)
	srv := bridge.New(cfg, broker, obs, bridge.Options{Logger: log})
	ln, err := srv.Listen()
	if err != nil {
		broker.Close()
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if o.ListenTLS != nil {
		ln = tls.NewListener(ln, o.ListenTLS)
	}
	g := &Gateway{Addr: addr, Name: name, Config: cfg, Broker: broker, Server: srv, Registry: reg, t: t}
	g.stop = testserve.Serve(t, srv, ln, broker)
	return g
}

// Stop shuts the gateway down gracefully now; the test's cleanup then
// does nothing more.
func (g *Gateway) Stop() { g.stop() }

// WaitReady waits for every broker connection to be up, and returns how
// long that took.
func (g *Gateway) WaitReady(within time.Duration) time.Duration {
	g.t.Helper()
	start := time.Now()
	testbroker.Eventually(g.t, within, "the gateway to be ready", func() bool { return g.Broker.Ready() == nil })
	return time.Since(start)
}

// Metric sums the samples of a counter or gauge family whose labels include
// the given ones (name, value, name, value…).
func (g *Gateway) Metric(name string, labels ...string) float64 {
	g.t.Helper()
	mfs, err := g.Registry.Gather()
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
