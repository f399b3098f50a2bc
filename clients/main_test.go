// Package clients tests mcbridge with its users' real memcache client
// libraries (PHP ext-memcached and ext-memcache, python-memcached,
// pymemcache, Ruby dalli, the libmemcached tools, Go gomemcache) by running
// the copyable programs in examples/ against an in-process gateway and the
// real RabbitMQ.
//
// The clients are Debian packages; .ci/run installs them. A missing one
// fails its tests with the apt-get command that installs it: nothing is
// skipped.
package clients

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// goBin holds the example Go programs, built once by TestMain.
var goBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mcbridge-clients-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goBin = dir
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "../examples/go/producer", "../examples/go/worker").CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build the Go examples: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := testbroker.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// requirePackages fails the test, saying what to install, unless every
// Debian package is installed.
func requirePackages(t *testing.T, pkgs ...string) {
	t.Helper()
	var missing []string
	for _, p := range pkgs {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", p).Output()
		if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), " installed") {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("client not installed: apt-get install %s   (.ci/run installs it)", strings.Join(missing, " "))
	}
}

// result is what one example program run printed.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// proc is a running example program.
type proc struct {
	argv    []string
	cmd     *exec.Cmd
	cancel  context.CancelFunc
	ctx     context.Context
	timeout time.Duration
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	start   time.Time
}

// start runs argv (from the repo root) with a deadline.
func start(t *testing.T, timeout time.Duration, env []string, argv ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	p := &proc{argv: argv, cancel: cancel, ctx: ctx, timeout: timeout}
	p.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	p.cmd.Dir = ".."
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return p
}

// wait returns the program's output and exit status; one that hit its
// deadline fails the test.
func (p *proc) wait(t *testing.T) result {
	t.Helper()
	err := p.cmd.Wait()
	p.cancel()
	r := result{stdout: p.stdout.String(), stderr: p.stderr.String(), took: time.Since(p.start)}
	if p.ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("%s: no exit within %v\nstdout:\n%s\nstderr:\n%s", strings.Join(p.argv, " "), p.timeout, clip(r.stdout), clip(r.stderr))
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", strings.Join(p.argv, " "), err)
	}
	return r
}

// run executes argv to its end; its exit status is returned, not judged.
func run(t *testing.T, timeout time.Duration, env []string, argv ...string) result {
	t.Helper()
	return start(t, timeout, env, argv...).wait(t)
}

// mustRun is run for a program that must exit 0.
func mustRun(t *testing.T, timeout time.Duration, env []string, argv ...string) result {
	t.Helper()
	r := run(t, timeout, env, argv...)
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(argv, " "), r.code, clip(r.stdout), clip(r.stderr))
	}
	return r
}

func clip(s string) string {
	if len(s) > 3000 {
		return s[:1500] + "\n…\n" + s[len(s)-1500:]
	}
	return s
}

// job is what every example producer enqueues and every worker prints.
type job struct {
	ID   int    `json:"id"`
	Body string `json:"body"`
}

// body is the body the producers give job i with size extra bytes.
func body(i, size int) string { return fmt.Sprintf("payload %d ", i) + strings.Repeat("x", size) }

var jobLine = regexp.MustCompile(`^(consumed|crashed holding) (\{.*\})$`)

// jobs parses a worker's output: the jobs it consumed and the one it held
// when it crashed (nil if none).
func jobs(t *testing.T, out string) (consumed []job, crashed *job) {
	t.Helper()
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		m := jobLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var j job
		if err := json.Unmarshal([]byte(m[2]), &j); err != nil {
			t.Fatalf("worker printed %q: %v", clip(line), err)
		}
		if m[1] == "consumed" {
			consumed = append(consumed, j)
		} else {
			crashed = &j
		}
	}
	return consumed, crashed
}

// stored counts a producer's "stored <i>" lines and checks their order.
func stored(t *testing.T, out string, n int) {
	t.Helper()
	var got []string
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "stored ") {
			got = append(got, line)
		}
	}
	if len(got) != n {
		t.Fatalf("producer stored %d jobs, want %d:\n%s", len(got), n, clip(out))
	}
}

// exactlyOnce checks that consumed holds jobs 1..n of each of perQueue
// producers exactly once (ids repeat across queues), with their bodies.
func exactlyOnce(t *testing.T, consumed []job, n, queues, size int) {
	t.Helper()
	seen := map[int]int{}
	for _, j := range consumed {
		if j.Body != body(j.ID, size) {
			t.Errorf("job %d: body %q, want %q", j.ID, clip(j.Body), clip(body(j.ID, size)))
		}
		seen[j.ID]++
	}
	for i := 1; i <= n; i++ {
		if seen[i] != queues {
			t.Errorf("job %d consumed %d times, want %d", i, seen[i], queues)
		}
	}
	if len(consumed) != n*queues {
		ids := make([]int, 0, len(consumed))
		for _, j := range consumed {
			ids = append(ids, j.ID)
		}
		slices.Sort(ids)
		t.Errorf("consumed %d jobs, want %d: %v", len(consumed), n*queues, ids)
	}
}

// drained waits until every queue is empty in the broker (nothing ready:
// an unacked reservation would have come back when its worker exited).
func drained(t *testing.T, queues ...string) {
	t.Helper()
	for _, q := range queues {
		testbroker.Eventually(t, 5*time.Second, q+" empty in the broker", func() bool { return testbroker.QueueDepth(t, q) == 0 })
	}
}

// inspect takes the head message of queue from the broker, as a back-office
// AMQP consumer sees it, and puts it back: its x-mc-flags and body.
func inspect(t *testing.T, queue string) (flags int64, body []byte) {
	t.Helper()
	ch := testbroker.Channel(t)
	defer ch.Close()
	d, ok, err := ch.Get(queue, false)
	if err != nil || !ok {
		t.Fatalf("basic.get %s: ok=%v err=%v", queue, ok, err)
	}
	if err := d.Nack(false, true); err != nil {
		t.Fatalf("requeue: %v", err)
	}
	switch v := d.Headers["x-mc-flags"].(type) {
	case int64:
		flags = v
	case nil:
		t.Fatalf("%s: message without x-mc-flags header: %v", queue, d.Headers)
	default:
		t.Fatalf("%s: x-mc-flags is %T %v, want int64", queue, v, v)
	}
	return flags, d.Body
}

// host and port split a gateway address for clients that want them apart.
func hostPort(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}
