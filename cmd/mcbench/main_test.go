package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestMain(m *testing.M) {
	// The sweep's gateway runs in a child process: this test binary,
	// started again with the child's variables set.
	if gatewayChild() {
		os.Exit(0)
	}
	testbroker.Main(m)
}

// workloadRow matches a workload's line with 0 lost and 0 duplicated.
func workloadRow(name string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+\d+\s+\S+\s+\S+\s+0\s+0\s`)
}

var workloads = []string{"raw publish+confirm", "raw consume+ack", "gateway set", "gateway get+delete",
	"raw publish+confirm (after)", "raw consume+ack (after)"}

// A small run of the whole comparison against the real broker: every
// workload is reported, none lost or duplicated a message (the run fails
// if one did), and the ratios are printed. The test's node is not the
// machine's default broker, so no broker figures are read.
func TestCompareSmallRun(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-amqp", testbroker.URL, "-clients", "4", "-messages", "400"}, &out)
	if err != nil {
		t.Fatalf("mcbench: %v\n%s", err, out.String())
	}
	for _, w := range workloads {
		if !workloadRow(w).MatchString(out.String()) {
			t.Errorf("no row for %q with 0 lost and 0 duplicated in\n%s", w, out.String())
		}
	}
	for _, line := range []string{"ratio set / raw publish:", "ratio get+delete / raw consume:", "p99 added by gateway (get+delete):"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("no %q in\n%s", line, out.String())
		}
	}
	if strings.Contains(out.String(), "sweep") {
		t.Errorf("one client count printed a sweep table:\n%s", out.String())
	}
}

// sweepRow is one line of the sweep table, its fields by column.
type sweepRow struct {
	clients                  int
	rawConns, gwConns        int
	rawConnMiB, gwConnMiB    float64
	fairSetGW, fairGetGW     float64
	gwSetMicros, gwGetMicros float64
	gwPeakMiB                float64
	// CPU per operation of the broker, the gateway and the clients
	// together; zero where the table has "-".
	allSetRaw, allSetGW, allGetRaw, allGetGW float64
}

var sweepLine = regexp.MustCompile(`(?m)^\s*(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+/[\d.]+\s+[\d.]+/[\d.]+\s+([\d.]+)/[\d.]+\s+([\d.]+)/[\d.]+\s+(\d+)/(\d+)\s+([-\d.]+)/([-\d.]+)\s+\S+\s+([\d.]+)/([\d.]+)\s+([\d.]+)\s+(?:-|([\d.]+)/([\d.]+) ([\d.]+)/([\d.]+))$`)

func parseSweep(t *testing.T, out string) []sweepRow {
	t.Helper()
	var rows []sweepRow
	f := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("%q in the sweep table: %v\n%s", s, err, out)
		}
		return v
	}
	for _, m := range sweepLine.FindAllStringSubmatch(out, -1) {
		rows = append(rows, sweepRow{
			clients: int(f(m[2])), fairSetGW: f(m[3]), fairGetGW: f(m[4]),
			rawConns: int(f(m[5])), gwConns: int(f(m[6])), rawConnMiB: f(m[7]), gwConnMiB: f(m[8]),
			gwSetMicros: f(m[9]), gwGetMicros: f(m[10]), gwPeakMiB: f(m[11]),
		})
		if m[12] != "" {
			r := &rows[len(rows)-1]
			r.allSetRaw, r.allSetGW, r.allGetRaw, r.allGetGW = f(m[12]), f(m[13]), f(m[14]), f(m[15])
		}
	}
	return rows
}

// sweep runs mcbench with the test node's CLI for the broker figures.
func sweep(t *testing.T, args ...string) string {
	t.Helper()
	o, err := parse(append([]string{"-amqp", testbroker.URL}, args...))
	if err != nil {
		t.Fatal(err)
	}
	o.ctl = nodeCtl(testbroker.Node(t))
	var out bytes.Buffer
	if err := bench(context.Background(), o, &out); err != nil {
		t.Fatalf("mcbench %v: %v\n%s", args, err, out.String())
	}
	t.Logf("mcbench %v:\n%s", args, out.String())
	return out.String()
}

// A sweep over two client counts, raw clients with a connection each and
// the messages spread over two queues: a row per count, every workload of
// every row without a loss or a duplicate (a get of the wrong queue would
// find it empty and fail the run), the broker saw exactly one connection
// per raw client and 1 + consume_connections for the gateway, and the
// gateway process's CPU per operation and resident memory are reported.
func TestSweepPerClientConnections(t *testing.T) {
	out := sweep(t, "-clients", "2,5", "-messages", "120", "-queues", "2")
	if !strings.Contains(out, "over 2 queue(s)") || !strings.Contains(out, "per-client connections") {
		t.Errorf("header does not say 2 queues and per-client connections:\n%s", out)
	}
	for _, w := range workloads {
		if n := len(workloadRow(w).FindAllString(out, -1)); n != 2 {
			t.Errorf("%d rows for %q with 0 lost and 0 duplicated, want 2, in\n%s", n, w, out)
		}
	}
	rows := parseSweep(t, out)
	if len(rows) != 2 {
		t.Fatalf("want 2 sweep rows, got %d in\n%s", len(rows), out)
	}
	for i, want := range []int{2, 5} {
		r := rows[i]
		if r.clients != want || r.rawConns != want || r.gwConns != 2 {
			t.Errorf("row %d: %d clients, %d raw and %d gateway connections; want %d, %d and 2\n%s",
				i, r.clients, r.rawConns, r.gwConns, want, want, out)
		}
		if r.gwSetMicros <= 0 || r.gwGetMicros <= 0 || r.gwPeakMiB <= 0 || r.rawConnMiB <= 0 || r.gwConnMiB <= 0 {
			t.Errorf("row %d lacks gateway CPU, memory or broker connection memory: %+v\n%s", i, r, out)
		}
		// The sum covers the gateway's own CPU, and raw clients cost
		// something.
		if r.allSetGW < r.gwSetMicros || r.allGetGW < r.gwGetMicros || r.allSetRaw <= 0 || r.allGetRaw <= 0 {
			t.Errorf("row %d: CPU of all processes per operation missing or below the gateway's: %+v\n%s", i, r, out)
		}
		if r.fairSetGW <= 0 || r.fairSetGW > 1 || r.fairGetGW <= 0 || r.fairGetGW > 1 {
			t.Errorf("row %d: fairness outside (0, 1]: %+v", i, r)
		}
	}
}

// Raw clients sharing one connection are one connection at the broker.
func TestSweepSharedConnection(t *testing.T) {
	out := sweep(t, "-clients", "3,4", "-messages", "40", "-raw-conns", "shared")
	rows := parseSweep(t, out)
	if len(rows) != 2 {
		t.Fatalf("want 2 sweep rows, got %d in\n%s", len(rows), out)
	}
	for _, r := range rows {
		if r.rawConns != 1 {
			t.Errorf("%d clients on a shared connection: the broker saw %d raw connections\n%s", r.clients, r.rawConns, out)
		}
	}
}

func TestParse(t *testing.T) {
	o, err := parse([]string{"-clients", "16, 64,256", "-messages", "300"})
	if err != nil || len(o.clientList) != 3 || o.clientList[2] != 256 || o.rawConns != "per-client" {
		t.Fatalf("parse: %+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{"-clients", "16,x"}, {"-clients", "0"}, {"-clients", "4,500", "-messages", "400"},
		{"-clients", "4,8", "-queues", "5"}, {"-raw-conns", "pooled"},
	} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
	if o, _ := parse([]string{"-mutexprofile", "m"}); !o.inProcess {
		t.Error("a profile does not put the gateway in this process")
	}
}

func TestIsLocalDefault(t *testing.T) {
	// The machine's broker's URL is only parsed here, never dialled; it is
	// spelled in parts so that the hermetic check (testbroker's
	// TestNoTestNamesTheMachinesBroker) keeps flagging real uses.
	machine := "amqp://guest:guest@127.0.0.1:" + strconv.Itoa(5672) + "/"
	for url, want := range map[string]bool{
		machine: true, "amqp://localhost/": true,
		"amqp://127.0.0.1:35672/": false, "amqp://rabbit.example:5672/": false, testbroker.URL: false,
	} {
		if got := isLocalDefault(url); got != want {
			t.Errorf("isLocalDefault(%q) = %v", url, got)
		}
	}
}

// Fairness is the slowest client's count over the median client's.
func TestSummarizeFairness(t *testing.T) {
	lat := [][]time.Duration{make([]time.Duration, 5), make([]time.Duration, 10), make([]time.Duration, 10), make([]time.Duration, 12)}
	r := summarize(lat, time.Second)
	if r.fair != 0.5 || r.rate != 37 {
		t.Errorf("fair %v rate %v, want 0.5 and 37", r.fair, r.rate)
	}
}

// This process's CPU and memory, as /proc tells them.
func TestProcFigures(t *testing.T) {
	cpu, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rss, peak, err := procRSS(os.Getpid())
	if err != nil || rss <= 0 || peak < rss {
		t.Errorf("rss %d peak %d: %v", rss, peak, err)
	}
	busy := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(busy) {
	}
	if later, _ := procCPU(os.Getpid()); later <= cpu {
		t.Errorf("CPU did not grow over 50ms of work: %v then %v", cpu, later)
	}
	// The nanosecond figure, not the 10ms ticks, where the kernel has it.
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/schedstat", os.Getpid())); err == nil {
		if d, err := schedCPU(os.Getpid()); err != nil || d <= 0 {
			t.Errorf("schedstat CPU %v: %v", d, err)
		}
	}
}

func TestPublishSweepSmallRun(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-amqp", testbroker.URL, "-publish-sweep", "-clients", "4", "-messages", "200"}, &out)
	if err != nil {
		t.Fatalf("mcbench -publish-sweep: %v\n%s", err, out.String())
	}
	rows := regexp.MustCompile(`(?m)^\d+\s+\d+\s+\d+\s+\d+, \d+$`).FindAllString(out.String(), -1)
	if len(rows) != 6 {
		t.Fatalf("want 6 layouts, got %d in\n%s", len(rows), out.String())
	}
}

func TestAckSweepSmallRun(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-amqp", testbroker.URL, "-ack-sweep", "-messages", "200"}, &out)
	if err != nil {
		t.Fatalf("mcbench -ack-sweep: %v\n%s", err, out.String())
	}
	rows := regexp.MustCompile(`(?m)^(each alone|every \d+, multiple)\s+\d+, \d+$`).FindAllString(out.String(), -1)
	if len(rows) != 3 {
		t.Fatalf("want 3 ack batchings, got %d in\n%s", len(rows), out.String())
	}
}
