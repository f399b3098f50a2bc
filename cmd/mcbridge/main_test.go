package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testserve"
)

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) != "" {
		main()
		os.Exit(0)
	}
	testbroker.Main(m)
}

// logLine is one line of -log-format json output.
type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

// jsonLines parses every line of out as a JSON log record.
func jsonLines(t *testing.T, out string) []logLine {
	t.Helper()
	var lines []logLine
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		if s == "" {
			continue
		}
		var l logLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", s, err)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := l[k]; !ok {
				t.Fatalf("log line without %q: %q", k, s)
			}
		}
		lines = append(lines, l)
	}
	return lines
}

// gateway is one mcbridge process, run in-process through run().
type gateway struct {
	t        *testing.T
	mcAddr   string // memcache port
	httpAddr string // metrics_listen
	logs     *testserve.LogBuffer
	cancel   context.CancelFunc
	done     chan error
}

// startRun writes yamlText to a config file and runs mcbridge on it with
// -log-format json and the extra flags. yamlText should listen on port 0;
// run reports the bound addresses once it serves. The gateway stops
// gracefully when the test ends. Its amqp.urls must not reach the
// machine's broker (testYAML points them at the private node).
func startRun(t *testing.T, yamlText string, extra ...string) *gateway {
	t.Helper()
	mustBePrivateYAML(t, yamlText)
	file := filepath.Join(t.TempDir(), "mcbridge.yml")
	if err := os.WriteFile(file, []byte(yamlText), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{t: t, logs: &testserve.LogBuffer{}, cancel: cancel, done: make(chan error, 1)}
	args := append([]string{"-config", file, "-log-format", "json"}, extra...)
	serving := make(chan boundAddrs, 1)
	go func() {
		g.done <- run(ctx, args, io.Discard, g.logs, func(a boundAddrs) { serving <- a })
	}()
	t.Cleanup(g.stop)

	select {
	case a := <-serving:
		g.mcAddr = a.listen.String()
		if a.metrics != nil {
			g.httpAddr = a.metrics.String()
		}
		return g
	case err := <-g.done:
		g.done <- err
		t.Fatalf("mcbridge stopped before serving: %v\nlogs:\n%s", err, g.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("mcbridge did not serve within 30s; logs:\n%s", g.logs)
	}
	return nil
}

// mustBePrivateYAML fails the test unless the config's amqp.urls keep off
// the machine's broker (testbroker.MustBePrivate).
func mustBePrivateYAML(t *testing.T, yamlText string) {
	t.Helper()
	cfg, err := config.Load([]byte(yamlText))
	if err != nil {
		t.Fatalf("test config: %v\n%s", err, yamlText)
	}
	var urls []string
	for _, u := range cfg.AMQP.URLs {
		urls = append(urls, u.Raw())
	}
	testbroker.MustBePrivate(t, urls)
}

// stop cancels the process context (SIGTERM) and waits for run to return.
func (g *gateway) stop() {
	if g.cancel == nil {
		return
	}
	g.cancel()
	g.cancel = nil
	select {
	case err := <-g.done:
		if err != nil {
			g.t.Errorf("run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		g.t.Errorf("run did not return within 30s of the stop")
	}
}

// httpClient keeps no idle connections, so no goroutine outlives a test.
var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get fetches path from the metrics listener.
func (g *gateway) get(path string) (int, string) {
	g.t.Helper()
	resp, err := httpClient.Get("http://" + g.httpAddr + path)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// scrape is one parsed GET /metrics.
type scrape struct {
	text string
	fams map[string]*dto.MetricFamily
}

func (g *gateway) scrape() scrape {
	g.t.Helper()
	code, body := g.get("/metrics")
	if code != http.StatusOK {
		g.t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	return parseScrape(g.t, body)
}

func parseScrape(t *testing.T, body string) scrape {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return scrape{text: body, fams: fams}
}

// value is the sample of family name whose labels are exactly labels
// ("k=v" pairs); a histogram yields its count. A missing series is 0, as
// Prometheus's increase() would see it.
func (s scrape) value(name string, labels ...string) float64 {
	f := s.fams[name]
	if f == nil {
		return 0
	}
	want := map[string]string{}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		want[k] = v
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return 0
}

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repo root not found at %s: %v", root, err)
	}
	return root
}

// testYAML is a config on free ports against the private broker node, with
// one YAML queue (its own metric label); any other key shares
// queue="_auto".
func testYAML(t *testing.T, queue string) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
metrics_listen: 127.0.0.1:0
amqp:
  urls: [%q]
  connection_name: mcbridge-test-%s
queues:
  - name: %s
`, testbroker.URL, t.Name(), queue)
}
