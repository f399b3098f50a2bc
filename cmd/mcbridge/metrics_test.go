package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/mcproto"
)

// specMetrics are the metric names of SPEC §5.
var specMetrics = []string{
	"mcbridge_connections",
	"mcbridge_connections_total",
	"mcbridge_commands_total",
	"mcbridge_publish_duration_seconds",
	"mcbridge_reservations_open",
	"mcbridge_requeued_total",
	"mcbridge_redelivered_total",
	"mcbridge_amqp_up",
	"mcbridge_amqp_reconnects_total",
	"mcbridge_amqp_blocked",
	"mcbridge_bytes_read_total",
	"mcbridge_bytes_written_total",
	"mcbridge_limit_refusals_total",
	"mcbridge_pending_bytes",
	"mcbridge_auth_total",
	"mcbridge_queues",
}

// Scripted traffic through a real mcbridge and RabbitMQ, then GET /metrics:
// every counter moved by exactly what the traffic did, and no label value
// came from a client key.
func TestMetricsAfterTraffic(t *testing.T) {
	cfgQ := testbroker.Name(t, "cfg")   // a YAML queue: queue="<name>"
	autoQ := testbroker.Name(t, "auto") // auto-declared: queue="_auto"
	g := startRun(t, testYAML(t, cfgQ))
	before := g.scrape()

	for _, name := range specMetrics {
		if _, ok := before.fams[name]; !ok && name != "mcbridge_commands_total" {
			t.Errorf("%s missing from the first scrape", name)
		}
	}
	// Every role is up after start, and nothing reconnected yet.
	for _, role := range []string{"publish", "consume"} {
		if v := before.value("mcbridge_amqp_up", "role="+role); v != 1 {
			t.Errorf("mcbridge_amqp_up{role=%q} = %v after start, want 1", role, v)
		}
		if v := before.value("mcbridge_amqp_reconnects_total", "role="+role); v != 0 {
			t.Errorf("mcbridge_amqp_reconnects_total{role=%q} = %v after the first connection, want 0", role, v)
		}
	}

	// Connection 1: set, get, delete; then it disconnects holding a
	// reservation on the auto queue.
	c1 := mctest.Dial(t, g.mcAddr)
	c1.Do("set "+cfgQ+" 0 0 1\r\na\r\n", "STORED\r\n")
	c1.Do("set "+cfgQ+" 0 0 1\r\nb\r\n", "STORED\r\n")
	c1.Do("set "+autoQ+" 0 0 1\r\nx\r\n", "STORED\r\n")
	c1.Do("get "+cfgQ+"\r\n", "VALUE "+cfgQ+" 0 1\r\na\r\nEND\r\n")
	c1.Do("delete "+cfgQ+"\r\n", "DELETED\r\n")
	c1.Do("delete "+cfgQ+"\r\n", "NOT_FOUND\r\n")
	c1.Do("get "+autoQ+"\r\n", "VALUE "+autoQ+" 0 1\r\nx\r\nEND\r\n")
	sent, recv := c1.Sent, c1.Received
	c1.Close()
	testbroker.Eventually(t, 10*time.Second, "the disconnect requeue", func() bool {
		return testbroker.QueueDepth(t, autoQ) == 1
	})

	// Connection 2: the requeued message comes back redelivered; a lease
	// that runs out; bad commands; quit.
	c2 := mctest.Dial(t, g.mcAddr)
	c2.Do("get "+autoQ+"\r\n", "VALUE "+autoQ+" 0 1\r\nx\r\nEND\r\n")
	c2.Do("delete "+autoQ+"\r\n", "DELETED\r\n")
	c2.Do("gat 1 "+cfgQ+"\r\n", "VALUE "+cfgQ+" 0 1\r\nb\r\nEND\r\n") // a 1s lease
	testbroker.Eventually(t, 10*time.Second, "the lease to run out", func() bool {
		return testbroker.QueueDepth(t, cfgQ) == 1
	})
	c2.Do("delete "+cfgQ+"\r\n", "NOT_FOUND\r\n")
	c2.Do("get "+cfgQ+"\r\n", "VALUE "+cfgQ+" 0 1\r\nb\r\nEND\r\n")
	c2.Do("delete "+cfgQ+"\r\n", "DELETED\r\n")
	c2.Do("get "+cfgQ+"\r\n", "END\r\n")
	c2.Do("bogus "+cfgQ+"\r\n", "ERROR\r\n")
	c2.Do("set "+cfgQ+" 0 0 x\r\n", "CLIENT_ERROR bad command line format\r\n")
	c2.Do("get amq.secret\r\n", "CLIENT_ERROR bad command line format\r\n")
	c2.Do("set weird/key 0 0 1\r\nz\r\n", "CLIENT_ERROR bad command line format\r\n")
	c2.Do("add "+cfgQ+" 0 0 1\r\nz\r\n", "CLIENT_ERROR add not supported by queue gateway\r\n")
	c2.Do("version\r\n", "VERSION "+bridge.Version+"\r\n")
	c2.Quit()
	sent += c2.Sent
	recv += c2.Received

	var after scrape
	testbroker.Eventually(t, 10*time.Second, "both connections to be closed", func() bool {
		after = g.scrape()
		return after.value("mcbridge_connections") == 0
	})

	type series struct {
		name   string
		labels []string
		want   float64
	}
	want := []series{
		{"mcbridge_connections_total", nil, 2},
		{"mcbridge_connections", nil, 0},
		{"mcbridge_commands_total", []string{"command=set", "result=stored"}, 3},
		{"mcbridge_commands_total", []string{"command=set", "result=client_error"}, 2}, // a bad key, a bad byte count
		{"mcbridge_commands_total", []string{"command=get", "result=hit"}, 4},
		{"mcbridge_commands_total", []string{"command=get", "result=miss"}, 1},
		{"mcbridge_commands_total", []string{"command=get", "result=client_error"}, 1},
		{"mcbridge_commands_total", []string{"command=gat", "result=hit"}, 1},
		{"mcbridge_commands_total", []string{"command=delete", "result=deleted"}, 3},
		{"mcbridge_commands_total", []string{"command=delete", "result=not_found"}, 2},
		{"mcbridge_commands_total", []string{"command=add", "result=client_error"}, 1},
		{"mcbridge_commands_total", []string{"command=invalid", "result=error"}, 1},
		{"mcbridge_commands_total", []string{"command=version", "result=ok"}, 1},
		{"mcbridge_commands_total", []string{"command=quit", "result=ok"}, 1},
		{"mcbridge_publish_duration_seconds", nil, 3},
		{"mcbridge_reservations_open", []string{"queue=" + cfgQ}, 0},
		{"mcbridge_reservations_open", []string{"queue=_auto"}, 0},
		{"mcbridge_requeued_total", []string{"queue=_auto", "reason=disconnect"}, 1},
		{"mcbridge_requeued_total", []string{"queue=" + cfgQ, "reason=timeout"}, 1},
		{"mcbridge_requeued_total", []string{"queue=" + cfgQ, "reason=disconnect"}, 0},
		{"mcbridge_requeued_total", []string{"queue=_auto", "reason=timeout"}, 0},
		{"mcbridge_requeued_total", []string{"queue=" + cfgQ, "reason=abort"}, 0},
		{"mcbridge_requeued_total", []string{"queue=" + cfgQ, "reason=shutdown"}, 0},
		{"mcbridge_redelivered_total", []string{"queue=_auto"}, 1},
		{"mcbridge_redelivered_total", []string{"queue=" + cfgQ}, 1},
		{"mcbridge_amqp_up", []string{"role=publish"}, 0}, // delta: stayed up
		{"mcbridge_amqp_up", []string{"role=consume"}, 0},
		{"mcbridge_amqp_reconnects_total", []string{"role=publish"}, 0},
		{"mcbridge_amqp_reconnects_total", []string{"role=consume"}, 0},
		{"mcbridge_amqp_blocked", nil, 0},
		{"mcbridge_bytes_read_total", nil, float64(sent)},
		{"mcbridge_bytes_written_total", nil, float64(recv)},
		{"mcbridge_limit_refusals_total", nil, 0},
		{"mcbridge_pending_bytes", nil, 0},
	}
	for _, s := range want {
		if d := after.value(s.name, s.labels...) - before.value(s.name, s.labels...); d != s.want {
			t.Errorf("%s{%s} moved by %v, want %v", s.name, strings.Join(s.labels, ","), d, s.want)
		}
	}
	// Nothing else moved: the commands_total series are exactly those above.
	var got []string
	for _, m := range after.fams["mcbridge_commands_total"].GetMetric() {
		var kv []string
		for _, lp := range m.GetLabel() {
			kv = append(kv, lp.GetName()+"="+lp.GetValue())
		}
		got = append(got, strings.Join(kv, ","))
	}
	var listed []string
	for _, s := range want {
		if s.name == "mcbridge_commands_total" {
			listed = append(listed, strings.Join(s.labels, ","))
		}
	}
	slices.Sort(got)
	slices.Sort(listed)
	if !slices.Equal(got, listed) {
		t.Errorf("mcbridge_commands_total series:\n got %v\nwant %v", got, listed)
	}

	checkBoundedLabels(t, after, cfgQ)
	for _, raw := range []string{autoQ, "amq.secret", "weird", "bogus"} {
		if strings.Contains(after.text, raw) {
			t.Errorf("client key %q appears in /metrics", raw)
		}
	}
}

// commandLabels are the command label's fixed set: the parser's command
// words and "invalid".
func commandLabels() []string {
	out := []string{"invalid"}
	for op := range 256 {
		if name := mcproto.Op(op).String(); !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// checkBoundedLabels asserts every mcbridge_* label value comes from the
// config or a fixed set.
func checkBoundedLabels(t *testing.T, s scrape, configQueues ...string) {
	t.Helper()
	allowed := map[string][]string{
		"queue":   append([]string{"_auto"}, configQueues...),
		"reason":  {"disconnect", "timeout", "abort", "shutdown"},
		"role":    {"publish", "consume"},
		"limit":   {"max_connections", "max_queues", "max_users", "max_item_size"},
		"command": commandLabels(),
		"result": {"hit", "miss", "stored", "not_stored", "deleted", "not_found", "touched", "ok",
			"error", "client_error", "server_error"},
		"le":      nil, // histogram buckets: checked by the client library
		"version": nil, // mcbridge_build_info: the binary's own version
	}
	for name, f := range s.fams {
		if !strings.HasPrefix(name, "mcbridge_") {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				vals, ok := allowed[lp.GetName()]
				if name == "mcbridge_auth_total" && lp.GetName() == "result" {
					vals = []string{"success", "failure", "refused"}
				}
				if !ok {
					t.Errorf("%s has an unexpected label %q", name, lp.GetName())
					continue
				}
				if vals != nil && !slices.Contains(vals, lp.GetValue()) {
					t.Errorf("%s{%s=%q}: value outside the fixed set %v", name, lp.GetName(), lp.GetValue(), vals)
				}
			}
		}
	}
}

// The HTTP endpoints of a gateway connected to the broker: /healthz and
// /readyz answer 200, /metrics has every SPEC §5 metric plus the Go runtime,
// process and build-info collectors.
func TestEndpointsConnected(t *testing.T) {
	g := startRun(t, testYAML(t, testbroker.Name(t, "q")))
	if code, body := g.get("/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	testbroker.Eventually(t, 10*time.Second, "/readyz to answer 200", func() bool {
		code, _ := g.get("/readyz")
		return code == http.StatusOK
	})
	c := mctest.Dial(t, g.mcAddr)
	c.Do("version\r\n", "VERSION "+bridge.Version+"\r\n")
	s := g.scrape()
	for _, name := range append(specMetrics, "mcbridge_build_info",
		"go_goroutines", "go_gc_duration_seconds", "go_memstats_heap_inuse_bytes",
		"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
		"go_build_info") {
		if _, ok := s.fams[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if v := s.value("mcbridge_build_info", "version="+bridge.Version); v != 1 {
		t.Errorf("mcbridge_build_info{version=%q} = %v, want 1", bridge.Version, v)
	}
}

// A gateway whose broker is unreachable still serves /healthz, answers
// /readyz 503 with the reason, and reports both roles down and no
// reconnection.
func TestEndpointsBrokerDown(t *testing.T) {
	// Port 1 on loopback: nothing listens, the dial fails at once.
	g := startRun(t, `listen: 127.0.0.1:0
metrics_listen: 127.0.0.1:0
amqp:
  urls: ["amqp://guest:guest@127.0.0.1:1/"]
  consume_connections: 2
`)
	if code, _ := g.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200 while the process serves", code)
	}
	code, body := g.get("/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "publish") || !strings.Contains(body, "consume") {
		t.Errorf("/readyz: %d %q, want 503 naming the publish and consume connections", code, body)
	}
	s := g.scrape()
	for _, role := range []string{"publish", "consume"} {
		if _, ok := s.fams["mcbridge_amqp_up"]; !ok {
			t.Fatal("no mcbridge_amqp_up series")
		}
		if v := s.value("mcbridge_amqp_up", "role="+role); v != 0 {
			t.Errorf("mcbridge_amqp_up{role=%q} = %v with the broker unreachable, want 0", role, v)
		}
		if v := s.value("mcbridge_amqp_reconnects_total", "role="+role); v != 0 {
			t.Errorf("mcbridge_amqp_reconnects_total{role=%q} = %v before any connection, want 0", role, v)
		}
	}
	if !strings.Contains(s.text, `mcbridge_amqp_up{role="publish"} 0`) {
		t.Errorf("mcbridge_amqp_up{role=\"publish\"} is not exported as 0:\n%s", s.text)
	}
}
