package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// proxyURL is the AMQP URL of a proxy in front of the broker.
func proxyURL(p *proxy) string { return "amqp://guest:guest@" + p.addr() + "/" }

// The network between gateway and broker is cut: sets and gets fail fast
// with SERVER_ERROR while it is down, the gateway is not ready, the
// reservations of the dead channels are dropped (a late delete is
// NOT_FOUND and acks nothing, not even the message that now has the same
// delivery tag on the new channel), and the gateway serves again by itself
// once the network is back.
func TestBrokerConnectionCut(t *testing.T) {
	p := startProxy(t, testbroker.Addr, "", nil)
	g := testgateway.Start(t, nil, testgateway.Options{URLs: []string{proxyURL(p)}})
	q := testbroker.Name(t, "q")
	a, b, c := mctest.MustDialConn(t, g.Addr), mctest.MustDialConn(t, g.Addr), mctest.MustDialConn(t, g.Addr)
	expect(t, "set m1", "STORED")(a.Set(q, "m1"))
	expect(t, "set m2", "STORED")(a.Set(q, "m2"))
	wantHit(t, a, q, "m1")
	wantHit(t, b, q, "m2")

	p.Cut()
	cut := time.Now()
	testbroker.Eventually(t, 5*time.Second, "the gateway to notice the cut", func() bool { return g.Broker.Ready() != nil })
	t.Logf("cut noticed after %v: %v", time.Since(cut).Round(time.Millisecond), g.Broker.Ready())
	start := time.Now()
	if r, err := c.Set(q, "while down"); err != nil || !strings.HasPrefix(r, "SERVER_ERROR ") {
		t.Errorf("set while the broker is unreachable: %q %v, want SERVER_ERROR", r, err)
	}
	if _, _, err := c.Get(q); err == nil || !strings.HasPrefix(err.Error(), "SERVER_ERROR ") {
		t.Errorf("get while the broker is unreachable: %v, want SERVER_ERROR", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("set and get while down took %v; they must fail fast", took)
	}
	testbroker.Eventually(t, 5*time.Second, "the dead channel's reservations to be dropped", func() bool {
		st, err := c.Stats("")
		return err == nil && st["queue_"+q+"_open_transactions"] == "0"
	})

	p.Resume()
	took := g.WaitReady(15 * time.Second)
	t.Logf("ready again %v after the network came back", took.Round(time.Millisecond))
	if r := g.Metric("mcbridge_amqp_reconnects_total"); r < 2 {
		t.Errorf("mcbridge_amqp_reconnects_total = %v, want ≥ 2 (publish and consume)", r)
	}

	// A fresh reservation takes delivery tag 1 of a fresh channel: the
	// stale reservations (also tag 1 and 2, on the dead channel) must not
	// ack it.
	d := mctest.MustDialConn(t, g.Addr)
	hit, first, err := d.Get(q)
	if err != nil || !hit {
		t.Fatalf("get after recovery: %v %v", hit, err)
	}
	expect(t, "late delete on a", "NOT_FOUND")(a.Delete(q))
	expect(t, "late delete on b", "NOT_FOUND")(b.Delete(q))
	expect(t, "delete of the live reservation", "DELETED")(d.Delete(q))
	second := "m1"
	if first == "m1" {
		second = "m2"
	}
	wantHit(t, d, q, second)
	expect(t, "delete", "DELETED")(d.Delete(q))
	expect(t, "set after recovery", "STORED")(d.Set(q, "m3"))
	wantHit(t, d, q, "m3")
	expect(t, "delete", "DELETED")(d.Delete(q))
	if n := g.Metric("mcbridge_redelivered_total"); n != 2 {
		t.Errorf("mcbridge_redelivered_total = %v, want 2 (m1 and m2 after the cut)", n)
	}
}

// The network stalls (no RST: a partition): heartbeats find the dead peer,
// sets meanwhile fail within the confirm timeout, and the gateway recovers.
func TestBrokerNetworkStall(t *testing.T) {
	p := startProxy(t, testbroker.Addr, "", nil)
	cfg := testgateway.Config()
	cfg.AMQP.ConfirmTimeout = time.Second
	g := testgateway.Start(t, cfg, testgateway.Options{URLs: []string{proxyURL(p)}, Heartbeat: time.Second})
	q := testbroker.Name(t, "q")
	a := mctest.MustDialConn(t, g.Addr)
	expect(t, "set", "STORED")(a.Set(q, "before"))

	p.Stall()
	stalled := time.Now()
	start := time.Now()
	r, err := a.Set(q, "stalled")
	took := time.Since(start)
	if err != nil || !strings.HasPrefix(r, "SERVER_ERROR ") {
		t.Errorf("set during the stall: %q %v, want SERVER_ERROR", r, err)
	}
	if took > cfg.AMQP.ConfirmTimeout+time.Second {
		t.Errorf("set during the stall took %v, want at most the confirm timeout %v", took, cfg.AMQP.ConfirmTimeout)
	}
	testbroker.Eventually(t, 10*time.Second, "heartbeats to find the dead peer", func() bool { return g.Broker.Ready() != nil })
	t.Logf("dead peer found %v after the stall", time.Since(stalled).Round(time.Millisecond))
	p.Resume()
	t.Logf("ready %v after the network came back", g.WaitReady(15*time.Second).Round(time.Millisecond))
	expect(t, "set after the stall", "STORED")(a.Set(q, "after"))
	// "stalled" may or may not have been stored (SERVER_ERROR means
	// unknown); the others must be there.
	got := mctest.Drain(t, a, q)
	if got["before"] != 1 || got["after"] != 1 || got["stalled"] > 1 || len(got) > 3 {
		t.Errorf("queue held %v, want before, after and at most one stalled", got)
	}
}

// The broker closes the gateway's connections (rabbitmqctl
// close_connection): the gateway reconnects, re-declares and serves again;
// reservations on the closed consume connection are dropped and their
// messages handed out again.
func TestBrokerClosesConnections(t *testing.T) {
	g := testgateway.Start(t, nil, testgateway.Options{})
	q := testbroker.Name(t, "q")
	a, b := mctest.MustDialConn(t, g.Addr), mctest.MustDialConn(t, g.Addr)
	expect(t, "set", "STORED")(a.Set(q, "held"))
	wantHit(t, a, q, "held")

	start := time.Now()
	n := testbroker.CloseConnections(t, g.Name+" ")
	if n < 2 {
		t.Fatalf("closed %d connections, want publish and consume", n)
	}
	testbroker.Eventually(t, 15*time.Second, "both roles to reconnect", func() bool {
		return g.Metric("mcbridge_amqp_reconnects_total", "role", "publish") >= 1 &&
			g.Metric("mcbridge_amqp_reconnects_total", "role", "consume") >= 1 && g.Broker.Ready() == nil
	})
	t.Logf("recovered %v after close_connection (includes rabbitmqctl's own run time)", time.Since(start).Round(time.Millisecond))
	expect(t, "late delete", "NOT_FOUND")(a.Delete(q))
	wantHit(t, b, q, "held")
	expect(t, "delete", "DELETED")(b.Delete(q))
	expect(t, "set after", "STORED")(b.Set(q, "after"))
	wantHit(t, b, q, "after")
	expect(t, "delete", "DELETED")(b.Delete(q))
}

// A confirm that never comes: the client gets SERVER_ERROR at
// confirm_timeout, the channel is replaced, and later sets on the same
// (only) publish channel are not stuck behind it.
func TestConfirmNeverComes(t *testing.T) {
	name := testgateway.UniqueName()
	// The proxy knows the publish link by the connection name it sends.
	p := startProxy(t, testbroker.Addr, publishConnName(name), nil)
	cfg := testgateway.Config()
	cfg.AMQP.ConfirmTimeout = time.Second
	g := testgateway.Start(t, cfg, testgateway.Options{URLs: []string{proxyURL(p)}, PublishChannels: 1, ConnectionName: name})
	q := testbroker.Name(t, "q")
	a := mctest.MustDialConn(t, g.Addr)
	expect(t, "set", "STORED")(a.Set(q, "first"))

	p.DropConfirms(1)
	start := time.Now()
	r, err := a.Set(q, "unconfirmed")
	took := time.Since(start)
	if err != nil || r != "SERVER_ERROR broker confirm timed out" {
		t.Errorf("set whose confirm is lost: %q %v, want SERVER_ERROR broker confirm timed out", r, err)
	}
	if took < cfg.AMQP.ConfirmTimeout || took > cfg.AMQP.ConfirmTimeout+time.Second {
		t.Errorf("SERVER_ERROR after %v, want about the confirm timeout %v", took, cfg.AMQP.ConfirmTimeout)
	}
	for i := range 20 {
		start := time.Now()
		expect(t, fmt.Sprintf("set %d after the lost confirm", i), "STORED")(a.Set(q, "later"))
		if d := time.Since(start); d > cfg.AMQP.ConfirmTimeout/2 {
			t.Errorf("set %d after the lost confirm took %v", i, d)
		}
	}
	// The broker did store the unconfirmed one: SERVER_ERROR means unknown.
	got := mctest.Drain(t, a, q)
	if got["first"] != 1 || got["unconfirmed"] != 1 || got["later"] != 20 {
		t.Errorf("queue held %v", got)
	}
}

// A memory alarm (connection.blocked): sets fail fast with SERVER_ERROR
// instead of hanging, gets and deletes keep working on the consume
// connection, and sets work again once the alarm clears.
func TestMemoryAlarm(t *testing.T) {
	cfg := testgateway.Config()
	cfg.AMQP.ConfirmTimeout = 1500 * time.Millisecond
	g := testgateway.Start(t, cfg, testgateway.Options{})
	q := testbroker.Name(t, "q")
	a, b := mctest.MustDialConn(t, g.Addr), mctest.MustDialConn(t, g.Addr)
	expect(t, "set", "STORED")(a.Set(q, "before1"))
	expect(t, "set", "STORED")(a.Set(q, "before2"))

	waited := time.Now()
	clear := testbroker.MemoryAlarm(t)
	alarm := time.Now()
	t.Logf("memory alarm raised in %v", alarm.Sub(waited).Round(time.Millisecond))
	// RabbitMQ blocks a connection when it next publishes: the first set
	// is written and its confirm never comes (SERVER_ERROR at the confirm
	// timeout), or the block is known already (SERVER_ERROR at once).
	start := time.Now()
	r, err := a.Set(q, "during")
	if err != nil || !strings.HasPrefix(r, "SERVER_ERROR ") {
		t.Errorf("first set under the alarm: %q %v, want SERVER_ERROR", r, err)
	}
	if d := time.Since(start); d > cfg.AMQP.ConfirmTimeout+time.Second {
		t.Errorf("first set under the alarm took %v, want at most the confirm timeout", d)
	}
	testbroker.Eventually(t, 10*time.Second, "the gateway to hear connection.blocked", func() bool {
		return g.Metric("mcbridge_amqp_blocked") == 1
	})
	t.Logf("first set: %q after %v; connection.blocked after %v", r, time.Since(start).Round(time.Millisecond), time.Since(alarm).Round(time.Millisecond))
	for i := range 5 {
		start := time.Now()
		r, err := a.Set(q, "blocked")
		if err != nil || r != "SERVER_ERROR broker blocked publishing (resource alarm)" {
			t.Errorf("set %d during the alarm: %q %v", i, r, err)
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("set %d during the alarm took %v", i, d)
		}
	}
	wantHit(t, b, q, "before1")
	expect(t, "delete during the alarm", "DELETED")(b.Delete(q))
	clear()
	cleared := time.Now()
	testbroker.Eventually(t, 10*time.Second, "a set to succeed after the alarm", func() bool {
		r, err := a.Set(q, "after")
		return err == nil && r == "STORED"
	})
	t.Logf("alarm window %v; sets work again %v after it cleared", cleared.Sub(alarm).Round(time.Millisecond), time.Since(cleared).Round(time.Millisecond))
	got := mctest.Drain(t, b, q)
	// "during" got SERVER_ERROR at the confirm timeout: unknown outcome
	// (the broker stores it once the alarm clears). Those refused at once
	// were never published.
	if got["before2"] != 1 || got["after"] < 1 || got["before1"] != 0 || got["during"] > 1 || got["blocked"] != 0 {
		t.Errorf("queue held %v", got)
	}
}

func wantHit(t testing.TB, c *mctest.Conn, q, value string) {
	t.Helper()
	hit, v, err := c.Get(q)
	if err != nil || !hit || v != value {
		t.Fatalf("get %s: hit=%v %q %v, want %q", q, hit, v, err, value)
	}
}
