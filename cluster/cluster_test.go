package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
)

// Queues of type quorum come from the YAML (queues[].type) and from
// auto-declaration with defaults.queue_type: quorum, replicated on all three
// nodes; a message stored through one of them is there for a gateway on
// another node.
func TestQuorumQueues(t *testing.T) {
	fromYAML := queueName(t, "yaml")
	auto := queueName(t, "auto")
	classic := queueName(t, "classic")
	cfgYAML := clusterConfig(t, fmt.Sprintf("queues:\n  - name: %s\n    type: quorum\n", fromYAML))
	cfgAuto := clusterConfig(t, "defaults: {queue_type: quorum}\n")
	gY := startGateway(t, cfgYAML, "qq-yaml")
	gA := startGateway(t, cfgAuto, "qq-auto")
	gC := startGateway(t, clusterConfig(t, ""), "qq-classic")

	// The YAML queue exists from start-up, before any client used it.
	if q, ok := listQueues(t, nodes[0])[fromYAML]; !ok || q.Type != "quorum" {
		t.Fatalf("YAML queue %s after start-up: %+v (found %v), want type quorum", fromYAML, q, ok)
	}
	a := mctest.MustDialConn(t, gA.Addr)
	want(t, "set on the auto-declared queue", func() (string, error) { return a.Set(auto, "hello") }, "STORED")
	y := mctest.MustDialConn(t, gY.Addr)
	want(t, "set on the YAML queue", func() (string, error) { return y.Set(fromYAML, "hi") }, "STORED")
	c := mctest.MustDialConn(t, gC.Addr)
	want(t, "set with the default queue type", func() (string, error) { return c.Set(classic, "plain") }, "STORED")

	qs := listQueues(t, nodes[0])
	for _, tc := range []struct{ name, typ string }{{fromYAML, "quorum"}, {auto, "quorum"}, {classic, "classic"}} {
		q := qs[tc.name]
		if q.Type != tc.typ {
			t.Errorf("queue %s: type %q, want %q", tc.name, q.Type, tc.typ)
		}
		if tc.typ == "quorum" {
			slices.Sort(q.Members)
			if len(q.Members) != 3 || len(q.Online) != 3 {
				t.Errorf("quorum queue %s: members %v, online %v; want all three nodes", tc.name, q.Members, q.Online)
			}
			t.Logf("%s: quorum, leader %s, members %v", tc.name, q.Leader, q.Members)
		}
	}

	// Any gateway reads what another stored, whichever nodes they are on.
	conns := connections(t, nodes[0])
	t.Logf("gateways: yaml %s; auto %s", describeNodes(gY.nodesOf(conns)), describeNodes(gA.nodesOf(conns)))
	for _, tc := range []struct {
		g    *gateway
		q, v string
	}{{gY, auto, "hello"}, {gA, fromYAML, "hi"}} {
		r := mctest.MustDialConn(t, tc.g.Addr)
		hit, v, err := r.Get(tc.q)
		if err != nil || !hit || v != tc.v {
			t.Fatalf("get %s through %s: %v %q %v, want %q", tc.q, tc.g.Name, hit, v, err, tc.v)
		}
		want(t, "delete", func() (string, error) { return r.Delete(tc.q) }, "DELETED")
	}
}

// Gateways started together spread their connections over the nodes: each
// connection starts at a random node of amqp.urls.
func TestConnectionsSpreadOverNodes(t *testing.T) {
	const gateways = 6
	var clients []*amqp.Client
	var names []string
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})
	for i := range gateways {
		name := fmt.Sprintf("spread-%d-%s", i, randHex(3))
		c := amqp.New(amqp.Options{URLs: urls(), ConnectionName: name, Logger: testserve.Logger(nil),
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := c.Start(ctx)
		cancel()
		if err != nil {
			t.Fatalf("start client %d: %v", i, err)
		}
		clients = append(clients, c)
		names = append(names, name)
	}
	for i, c := range clients {
		testbroker.Eventually(t, 30*time.Second, fmt.Sprintf("client %d to be ready", i), func() bool { return c.Ready() == nil })
	}
	conns := connections(t, nodes[0])
	perNode := map[string]int{}
	perGateway := map[string]int{} // the node of each gateway's publish connection
	total := 0
	for _, c := range conns {
		for _, name := range names {
			if strings.HasPrefix(c.Name, name+" ") {
				n := nodeByPort(c.Port)
				if n == nil {
					t.Fatalf("connection %q on port %d, which is no test node", c.Name, c.Port)
				}
				perNode[n.short]++
				total++
				if strings.HasSuffix(c.Name, " publish 0") {
					perGateway[n.short]++
				}
			}
		}
	}
	t.Logf("%d gateways, %d connections: per node %v; publish connections per node %v", gateways, total, perNode, perGateway)
	if total != 2*gateways {
		t.Fatalf("found %d of the gateways' connections, want %d", total, 2*gateways)
	}
	// 12 connections each at a random one of 3 nodes: all on one node has
	// probability 3·3⁻¹² ≈ 6e-6.
	if len(perNode) < 2 {
		t.Errorf("every connection is on %v: the gateways do not spread over the cluster", perNode)
	}
	if perNode[nodes[0].short] == total {
		t.Errorf("every gateway sits on the first node of amqp.urls")
	}
}

// A memcache client lists two gateways: its keys hash across them, and a
// consumer on either gateway sees every message, whichever gateway stored
// it. A message is tied to a gateway only while reserved.
func TestGatewaysShareQueues(t *testing.T) {
	cfg := clusterConfig(t, "defaults: {queue_type: quorum}\n")
	g1 := startGateway(t, cfg, "share-g1")
	g2 := startGateway(t, cfg, "share-g2")
	byAddr := map[string]*gateway{g1.Addr: g1, g2.Addr: g2}
	other := map[*gateway]*gateway{g1: g2, g2: g1}

	ss := new(memcache.ServerList)
	if err := ss.SetServers(g1.Addr, g2.Addr); err != nil {
		t.Fatal(err)
	}
	mcc := memcache.NewFromSelector(ss)
	mcc.Timeout = 10 * time.Second
	mcc.MaxIdleConns = 4
	t.Cleanup(func() { _ = mcc.Close() })

	const keys, perKey = 16, 5
	base := "mcbc.share." + randHex(3)
	owner := map[string]*gateway{}
	stored := map[*gateway]int{}
	var ks []string
	for i := range keys {
		k := fmt.Sprintf("%s.k%02d", base, i)
		t.Cleanup(func() { deleteQueue(t, k) })
		ks = append(ks, k)
		addr, err := ss.PickServer(k)
		if err != nil {
			t.Fatal(err)
		}
		owner[k] = byAddr[addr.String()]
		for j := range perKey {
			if err := mcc.Set(&memcache.Item{Key: k, Value: fmt.Appendf(nil, "%s#%d", k, j), Flags: uint32(j)}); err != nil {
				t.Fatalf("gomemcache Set %s #%d: %v", k, j, err)
			}
			stored[owner[k]]++
		}
	}
	for _, g := range []*gateway{g1, g2} {
		got := g.Metric("mcbridge_commands_total", "command", "set", "result", "stored")
		if int(got) != stored[g] {
			t.Errorf("%s answered STORED %v times, want %d (the keys that hash to it)", g.Name, got, stored[g])
		}
		if stored[g] == 0 {
			t.Errorf("no key hashed to %s", g.Name)
		}
	}
	t.Logf("%d keys × %d messages through gomemcache: %d stored via %s, %d via %s", keys, perKey, stored[g1], g1.Name, stored[g2], g2.Name)

	// The first three messages of each queue are consumed through the
	// gateway the key does NOT hash to (raw get/delete), the rest through
	// gomemcache (the owner: Get, then CompareAndSwap acks by id, from any
	// pooled connection). The queues are FIFO: the values come in order.
	raw := map[*gateway]*mctest.Conn{g1: mctest.MustDialConn(t, g1.Addr), g2: mctest.MustDialConn(t, g2.Addr)}
	for _, k := range ks {
		r := raw[other[owner[k]]]
		for j := range 3 {
			hit, v, err := r.Get(k)
			if wantV := fmt.Sprintf("%s#%d", k, j); err != nil || !hit || v != wantV {
				t.Fatalf("get %s through %s (not the gateway that stored it): %v %q %v, want %q", k, other[owner[k]].Name, hit, v, err, wantV)
			}
			want(t, "delete", func() (string, error) { return r.Delete(k) }, "DELETED")
		}
		for j := 3; j < perKey; j++ {
			it, err := mcc.Get(k)
			if wantV := fmt.Sprintf("%s#%d", k, j); err != nil || string(it.Value) != wantV || it.Flags != uint32(j) {
				t.Fatalf("gomemcache Get %s: %v %v, want %q flags %d", k, it, err, wantV, j)
			}
			if err := mcc.CompareAndSwap(it); err != nil {
				t.Fatalf("gomemcache CompareAndSwap (ack) %s: %v", k, err)
			}
		}
		if _, err := mcc.Get(k); !errors.Is(err, memcache.ErrCacheMiss) {
			t.Fatalf("gomemcache Get %s after all were acked: %v, want a miss", k, err)
		}
		if hit, v, err := raw[g1].Get(k); hit || err != nil {
			t.Fatalf("get %s after all were acked: %v %q %v, want a miss", k, hit, v, err)
		}
	}

	// While reserved, a message is tied to the gateway that reserved it:
	// the other gateway does not see it. When the reserving client goes
	// away, the other gateway gets it.
	q := queueName(t, "tied")
	want(t, "set", func() (string, error) { return raw[g1].Set(q, "tied") }, "STORED")
	a := mctest.MustDialConn(t, g2.Addr)
	if hit, v, err := a.Get(q); err != nil || !hit || v != "tied" {
		t.Fatalf("reserve through %s: %v %q %v", g2.Name, hit, v, err)
	}
	if hit, v, err := raw[g1].Get(q); err != nil || hit {
		t.Fatalf("get through %s while %s holds the reservation: %v %q %v, want a miss", g1.Name, g2.Name, hit, v, err)
	}
	a.Close()
	start := time.Now()
	testbroker.Eventually(t, 15*time.Second, "the released message at the other gateway", func() bool {
		hit, v, err := raw[g1].Get(q)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if hit && v != "tied" {
			t.Fatalf("get: %q, want %q", v, "tied")
		}
		return hit
	})
	t.Logf("reservation released by a client of %s, reserved through %s %v later", g2.Name, g1.Name, time.Since(start).Round(time.Millisecond))
	want(t, "delete", func() (string, error) { return raw[g1].Delete(q) }, "DELETED")
	if hit, _, err := raw[g2].Get(q); hit || err != nil {
		t.Fatalf("get after the ack: %v %v, want a miss", hit, err)
	}
}
