package bridge

import (
	"io"
	"testing"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
)

func TestMain(m *testing.M) {
	testbroker.Main(m)
}

// gateway is a running mcbridge wired to the real broker, for one test.
// (testgateway does the same for other packages; it imports bridge, so
// these package bridge tests wire their own, from testserve's parts.)
type gateway struct {
	t      testing.TB
	cfg    *config.Config
	srv    *Server
	broker *amqp.Client
	addr   string
	// stop shuts the gateway down gracefully; safe to call twice.
	stop func()
}

// testConfig is the default config listening on a free port.
func testConfig() *config.Config { return testserve.Config() }

// startGateway starts a gateway on cfg (nil: testConfig()) and stops it,
// gracefully, when the test ends.
func startGateway(t testing.TB, cfg *config.Config) *gateway {
	t.Helper()
	return startGatewayLog(t, cfg, nil)
}

// startGatewayLog is startGateway with the gateway's log written to w
// (nil: as testserve.Logger does by default).
func startGatewayLog(t testing.TB, cfg *config.Config, w io.Writer) *gateway {
	t.Helper()
	if cfg == nil {
		cfg = testConfig()
	}
	obs := NewObserver(nil)
	log := testserve.Logger(w)
	o := testserve.BrokerOptions(cfg, "mcbridge-test "+t.Name(), log)
	o.Topology = Topology(cfg)
	o.Observer = obs
	broker := testserve.StartBroker(t, o)
	srv := New(cfg, broker, obs, Options{Logger: log})
	ln, err := srv.Listen()
	if err != nil {
		broker.Close()
		t.Fatalf("listen: %v", err)
	}
	g := &gateway{t: t, cfg: cfg, srv: srv, broker: broker, addr: ln.Addr().String()}
	g.stop = testserve.Serve(t, srv, ln, broker)
	return g
}

// client is a raw memcache text-protocol connection that checks exact
// bytes; the binary and meta tests add their own methods.
type client struct{ *mctest.Client }

func (g *gateway) dial() *client {
	g.t.Helper()
	return dialClient(g.t, g.addr)
}

func dialClient(t testing.TB, addr string) *client {
	t.Helper()
	return &client{mctest.Dial(t, addr)}
}

// synced proves the connection still parses commands in step.
func (c *client) synced() {
	c.T.Helper()
	c.Do("version\r\n", "VERSION "+Version+"\r\n")
}
