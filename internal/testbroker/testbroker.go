// Package testbroker gives each test binary that needs RabbitMQ a private
// node of its own, started by its TestMain (Main) and stopped when it
// ends; the tests never touch a broker they did not start. It also gives
// unique queue names with cleanup, the back-office view of the broker, and
// faults: rabbitmqctl against the private node, a memory alarm, a lowered
// consumer_timeout, a stopped or frozen node.
package testbroker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/mcbridge/mcbridge/internal/rabbitnode"
)

// URL and Addr are the private node's AMQP URL (as guest) and address
// (127.0.0.1:<port>), set by Main before any test runs.
var (
	URL  string
	Addr string
)

// node is this test binary's private node; nil until Main started it.
var node *rabbitnode.Node

// notStarted is the message for helpers used without Main.
const notStarted = "testbroker: no private broker node: the package's TestMain must call testbroker.Main(m)"

// Main starts this test binary's private RabbitMQ node, runs the tests,
// checks for leaked goroutines (goleak, with leakOpts), stops the node and
// exits. Where RabbitMQ is not installed it fails at once, saying how to
// install it; it never skips. If the binary dies before the end (a panic,
// -timeout, SIGKILL), the node's watchdog stops it.
func Main(m *testing.M, leakOpts ...goleak.Option) { os.Exit(Run(m, leakOpts...)) }

// Run is Main without the exit: it returns the exit code, for a TestMain
// with work of its own to do afterwards.
func Run(m *testing.M, leakOpts ...goleak.Option) (code int) {
	start := time.Now()
	host, err := rabbitnode.NewHost("mcbt")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the tests need a private RabbitMQ node and cannot start one:\n%v\n", err)
		return 1
	}
	n, err := host.NewNode(packageName())
	if err == nil {
		err = n.Start()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the tests need a private RabbitMQ node and cannot start one:\n%v\n", err)
		if cerr := host.Close(); cerr != nil {
			fmt.Fprintln(os.Stderr, cerr)
		}
		return 1
	}
	node, URL, Addr = n, n.URL(), n.Addr()
	fmt.Fprintf(os.Stderr, "testbroker: node %s on %s up in %v\n", n.Name, Addr, time.Since(start).Round(time.Millisecond))

	code = m.Run()
	if code == 0 {
		if err := goleak.Find(append(leakOpts, rabbitnode.IgnoreRunning())...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	t0 := time.Now()
	if err := host.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "testbroker: %v\n", err)
		code = max(code, 1)
	}
	fmt.Fprintf(os.Stderr, "testbroker: node %s stopped in %v\n", n.Name, time.Since(t0).Round(time.Millisecond))
	return code
}

// packageName names the node after the test binary (bridge.test: bridge).
func packageName() string {
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	if name == "" {
		return "pkg"
	}
	return name
}

// Node is this binary's private node (for what the helpers here do not
// cover). It fails the test when Main did not start one.
func Node(t testing.TB) *rabbitnode.Node {
	t.Helper()
	if node == nil {
		t.Fatal(notStarted)
	}
	return node
}

// MustBePrivate fails the test when a broker URL would reach a broker the
// tests did not start: the machine's default one on port 5672 of this
// host. No URL at all counts as that one (amqp.Options and config default
// to it). Test gateways and clients check their URLs with it.
func MustBePrivate(t testing.TB, urls []string) {
	t.Helper()
	if len(urls) == 0 {
		t.Fatalf("no broker URL: the default is the machine's broker on port 5672, which tests never use; use testbroker.URL")
	}
	for _, u := range urls {
		uri, err := amqp091.ParseURI(u)
		if err != nil {
			continue // the test wants a bad URL
		}
		ip := net.ParseIP(uri.Host)
		if uri.Port == 5672 && (uri.Host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified())) {
			t.Fatalf("broker URL to %s: that is the machine's broker, which tests never use; use testbroker.URL", net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)))
		}
	}
}

var unsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Name returns a queue or exchange name unique to this test run, made of
// safe characters, and deletes the queue (and an exchange of that name)
// when the test ends.
func Name(t testing.TB, hint string) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := unsafe.ReplaceAllString(t.Name(), "_")
	if len(base) > 60 {
		base = base[len(base)-60:]
	}
	name := strings.Trim(fmt.Sprintf("mcbt.%s.%s.%s", base, hint, hex.EncodeToString(b[:])), ".")
	t.Cleanup(func() { Delete(t, name) })
	return name
}

// Delete removes a queue and an exchange of that name, if they exist.
func Delete(t testing.TB, name string) {
	t.Helper()
	Node(t)
	conn, err := amqp091.Dial(URL)
	if err != nil {
		t.Errorf("cleanup: connect to broker: %v", err)
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(name, false, false, false)
		_ = ch.Close()
	}
	if ch, err := conn.Channel(); err == nil {
		_ = ch.ExchangeDelete(name, false, false)
		_ = ch.Close()
	}
}

// Dial opens a raw amqp091-go connection for a test, closed at its end:
// the back-office view of what the gateway did.
func Dial(t testing.TB) *amqp091.Connection {
	t.Helper()
	Node(t)
	conn, err := amqp091.Dial(URL)
	if err != nil {
		t.Fatalf("dial broker: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Channel opens a channel on a fresh test connection.
func Channel(t testing.TB) *amqp091.Channel {
	t.Helper()
	ch, err := Dial(t).Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	return ch
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// QueueDepth is the broker's own count of ready messages in queue, from a
// passive declare on a connection of its own: the back-office view, which
// does not trust what the gateway says.
func QueueDepth(t testing.TB, queue string) int {
	t.Helper()
	Node(t)
	conn, err := amqp091.Dial(URL)
	if err != nil {
		t.Fatalf("dial broker: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("passive declare %s: %v", queue, err)
	}
	return q.Messages
}

// Unacked is the broker's count of queue's messages delivered and not yet
// acked, from rabbitmqctl (AMQP has no way to ask).
func Unacked(t testing.TB, queue string) int {
	t.Helper()
	out, err := Rabbitmqctl("list_queues", "--no-table-headers", "name", "messages_unacknowledged")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == queue {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("rabbitmqctl list_queues: %q", line)
			}
			return n
		}
	}
	t.Fatalf("rabbitmqctl list_queues: no queue %q in\n%s", queue, out)
	return 0
}
