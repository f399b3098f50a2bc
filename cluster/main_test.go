package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/rabbitnode"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// TestMain starts the cluster once for all tests and always stops it.
func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) (code int) {
	start := time.Now()
	c, err := startCluster()
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "cluster tests panicked: %v\n", r)
			code = 2
		}
		t0 := time.Now()
		if err := c.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "cluster teardown: %v\n", err)
			code = max(code, 1)
		}
		fmt.Fprintf(os.Stderr, "cluster: stopped in %v\n", time.Since(t0).Round(time.Millisecond))
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start the three-node RabbitMQ test cluster: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cluster: %d nodes up and clustered in %v (%s)\n", len(nodes), time.Since(start).Round(time.Millisecond), c.dir())
	code = m.Run()
	if code == 0 {
		if err := goleak.Find(rabbitnode.IgnoreRunning()); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	return code
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// clusterConfig is a gateway config from YAML whose amqp.urls are the three
// nodes, plus extra top-level YAML.
func clusterConfig(t testing.TB, extra string) *config.Config {
	t.Helper()
	var q []string
	for _, u := range urls() {
		q = append(q, strconv.Quote(u))
	}
	y := fmt.Sprintf("listen: 127.0.0.1:0\nmetrics_listen: \"\"\namqp:\n  urls: [%s]\n%s", strings.Join(q, ", "), extra)
	cfg, err := config.Load([]byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	return cfg
}

// readyEvent is a change of a gateway's readiness.
type readyEvent struct {
	at    time.Time
	ready bool
	why   string
}

// recorder wraps the gateway's observer: it records every broker
// connection going down or up, with what Ready (= /readyz) said at that
// instant.
type recorder struct {
	*bridge.Observer
	client atomic.Pointer[amqp.Client]

	mu     sync.Mutex
	events []connEvent
}

type connEvent struct {
	at        time.Time
	role      amqp.Role
	index     int
	up        bool
	readyNil  bool // Ready() == nil right then
	readyText string
}

func (r *recorder) ConnectionUp(role amqp.Role, index int, up bool) {
	r.Observer.ConnectionUp(role, index, up)
	ev := connEvent{at: time.Now(), role: role, index: index, up: up}
	if c := r.client.Load(); c != nil {
		err := c.Ready()
		ev.readyNil = err == nil
		if err != nil {
			// Ready joins one line per connection that is down: keep this
			// one's.
			ev.readyText = err.Error()
			for _, line := range strings.Split(ev.readyText, "\n") {
				if strings.HasPrefix(line, fmt.Sprintf("%s connection %d:", role, index)) {
					ev.readyText = line
				}
			}
		}
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []connEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]connEvent(nil), r.events...)
}

// gateway is a running mcbridge wired like cmd/mcbridge (testgateway),
// with a recorder of its broker connections' events and a poller of its
// readiness.
type gateway struct {
	*testgateway.Gateway
	rec *recorder

	pollStop chan struct{}
	pollDone chan struct{}
	pollMu   sync.Mutex
	polled   []readyEvent // transitions seen by polling Ready
}

// startGateway starts a gateway on cfg and stops it when the test ends. It
// waits until every broker connection is up.
func startGateway(t testing.TB, cfg *config.Config, name string) *gateway {
	t.Helper()
	g := startGatewayNoWait(t, cfg, name)
	g.WaitReady(30 * time.Second)
	return g
}

func startGatewayNoWait(t testing.TB, cfg *config.Config, name string) *gateway {
	t.Helper()
	name = name + "-" + randHex(3)
	rec := &recorder{}
	g := &gateway{rec: rec}
	g.Gateway = testgateway.Start(t, cfg, testgateway.Options{
		ConnectionName: name,
		Heartbeat:      cfg.AMQP.Heartbeat,
		LogAttrs:       []any{"gateway", name},
		Observer: func(metrics *bridge.Observer) amqp.Observer {
			rec.Observer = metrics
			return rec
		},
		BeforeStart: func(c *amqp.Client) { rec.client.Store(c) },
	})
	// Cleanups run last first: the poller stops before the gateway does.
	t.Cleanup(g.stopPolling)
	return g
}

// pollReady records every change of Ready() (what /readyz serves) until
// stopPolling.
func (g *gateway) pollReady() {
	g.pollStop, g.pollDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(g.pollDone)
		last := true
		first := true
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			err := g.Broker.Ready()
			if ready := err == nil; first || ready != last {
				ev := readyEvent{at: time.Now(), ready: ready}
				if err != nil {
					ev.why = err.Error()
				}
				g.pollMu.Lock()
				g.polled = append(g.polled, ev)
				g.pollMu.Unlock()
				last, first = ready, false
			}
			select {
			case <-g.pollStop:
				return
			case <-tick.C:
			}
		}
	}()
}

func (g *gateway) stopPolling() {
	if g.pollStop != nil {
		close(g.pollStop)
		<-g.pollDone
		g.pollStop = nil
	}
}

func (g *gateway) pollEvents() []readyEvent {
	g.pollMu.Lock()
	defer g.pollMu.Unlock()
	return append([]readyEvent(nil), g.polled...)
}

// brokerConn is one AMQP connection as the cluster lists it.
type brokerConn struct {
	Pid      string // as close_connection takes it: <rmqa@localhost.…>
	Port     int    // the node's AMQP port
	PeerPort int
	Name     string // connection_name from the client properties
}

// connections lists the cluster's client connections, asking a running
// node. The JSON formatter prints pids in a form close_connection does not
// take, so the pids come from a second, tab-separated listing, joined on
// the client's port.
func connections(t testing.TB, via *node) []brokerConn {
	t.Helper()
	var out, tab string
	var err error
	for range 5 {
		out, err = ctl(via.name, "list_connections", "peer_port", "port", "client_properties", "--formatter", "json")
		if err == nil {
			tab, err = ctl(via.name, "list_connections", "--no-table-headers", "peer_port", "pid")
		}
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("list connections: %v", err)
	}
	var raw []struct {
		PeerPort int             `json:"peer_port"`
		Port     int             `json:"port"`
		Props    json.RawMessage `json:"client_properties"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &raw); err != nil {
		t.Fatalf("list connections: %v\n%s", err, out)
	}
	pids := map[int]string{}
	for _, l := range strings.Split(tab, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 {
			if p, err := strconv.Atoi(f[0]); err == nil {
				pids[p] = f[1]
			}
		}
	}
	var conns []brokerConn
	for _, r := range raw {
		conns = append(conns, brokerConn{Pid: pids[r.PeerPort], Port: r.Port, PeerPort: r.PeerPort, Name: connectionName(r.Props)})
	}
	return conns
}

// connectionName digs connection_name out of client_properties, which the
// JSON formatter prints as a list of [name, type, value] triples (or an
// object, depending on the version).
func connectionName(props json.RawMessage) string {
	var obj map[string]any
	if json.Unmarshal(props, &obj) == nil {
		if s, ok := obj["connection_name"].(string); ok {
			return s
		}
	}
	var list [][]any
	if json.Unmarshal(props, &list) == nil {
		for _, e := range list {
			if len(e) == 3 {
				if k, _ := e[0].(string); k == "connection_name" {
					s, _ := e[2].(string)
					return s
				}
			}
		}
	}
	return ""
}

// nodesOf maps each of the gateway's connections (by role and index, e.g.
// "publish 0") to the node it is on.
func (g *gateway) nodesOf(conns []brokerConn) map[string]*node {
	out := map[string]*node{}
	for _, c := range g.connsIn(conns) {
		out[strings.TrimPrefix(c.Name, g.Name+" ")] = nodeByPort(c.Port)
	}
	return out
}

// connsIn picks the gateway's connections out of a listing.
func (g *gateway) connsIn(conns []brokerConn) []brokerConn {
	var out []brokerConn
	for _, c := range conns {
		if strings.HasPrefix(c.Name, g.Name+" ") {
			out = append(out, c)
		}
	}
	return out
}

func describeNodes(m map[string]*node) string {
	var parts []string
	for _, role := range []string{"publish 0", "consume 0", "consume 1", "consume 2"} {
		if n, ok := m[role]; ok {
			name := "?"
			if n != nil {
				name = n.short
			}
			parts = append(parts, role+"@"+name)
		}
	}
	return strings.Join(parts, ", ")
}

// runningNode is some node other than the excluded ones.
func runningNode(except ...*node) *node {
	for _, n := range nodes {
		skip := false
		for _, e := range except {
			skip = skip || e == n
		}
		if !skip {
			return n
		}
	}
	return nil
}

// dialAMQP opens a back-office connection to a node, closed at the test's
// end.
func dialAMQP(t testing.TB, n *node) *amqp091.Connection {
	t.Helper()
	conn, err := amqp091.DialConfig(n.url(), amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("dial %s: %v", n.name, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// queueName is unique to this run; the queue is deleted at the test's end
// through a node that is up then.
func queueName(t testing.TB, hint string) string {
	t.Helper()
	name := "mcbc." + hint + "." + randHex(4)
	t.Cleanup(func() { deleteQueue(t, name) })
	return name
}

func deleteQueue(t testing.TB, name string) {
	for _, n := range nodes {
		conn, err := amqp091.DialConfig(n.url(), amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
		if err != nil {
			continue
		}
		ch, err := conn.Channel()
		if err == nil {
			_, err = ch.QueueDelete(name, false, false, false)
		}
		_ = conn.Close()
		if err == nil {
			return
		}
	}
	t.Errorf("cleanup: could not delete queue %s through any node", name)
}

// queueInfo is one row of list_queues.
type queueInfo struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Leader  string   `json:"leader"`
	Members []string `json:"members"`
	Online  []string `json:"online"`
	Msgs    int      `json:"messages"`
}

func listQueues(t testing.TB, via *node) map[string]queueInfo {
	t.Helper()
	out, err := ctl(via.name, "list_queues", "name", "type", "leader", "members", "online", "messages", "--formatter", "json")
	if err != nil {
		t.Fatalf("list queues: %v", err)
	}
	var rows []json.RawMessage
	if err := json.Unmarshal([]byte(jsonPart(out)), &rows); err != nil {
		t.Fatalf("list queues: %v\n%s", err, out)
	}
	m := map[string]queueInfo{}
	for _, r := range rows {
		var q queueInfo
		// Classic queues print "" for leader and members: decode what fits.
		var loose map[string]any
		if json.Unmarshal(r, &loose) != nil {
			continue
		}
		q.Name, _ = loose["name"].(string)
		q.Type, _ = loose["type"].(string)
		q.Leader, _ = loose["leader"].(string)
		q.Members = stringList(loose["members"])
		q.Online = stringList(loose["online"])
		if f, ok := loose["messages"].(float64); ok {
			q.Msgs = int(f)
		}
		m[q.Name] = q
	}
	return m
}

func stringList(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// want runs a one-line command and checks its reply.
func want(t testing.TB, what string, do func() (string, error), wantReply string) {
	t.Helper()
	got, err := do()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != wantReply {
		t.Fatalf("%s: got %q, want %q", what, got, wantReply)
	}
}
