// Package testbroker gives tests the real RabbitMQ they run against: a
// reachability check that fails loudly, unique queue names, and cleanup.
package testbroker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// URL is the broker every test uses: the machine's own RabbitMQ.
const URL = "amqp://guest:guest@127.0.0.1:5672/"

// Addr is its TCP address.
const Addr = "127.0.0.1:5672"

// howToStart is printed when the broker is missing: tests never skip.
const howToStart = `RabbitMQ is not reachable at 127.0.0.1:5672 (guest/guest); the tests need it.
Start it with:   rabbitmq-server -detached   (Debian: apt-get install rabbitmq-server)
then check with: rabbitmqctl await_startup`

// MustReach exits the test binary at once, with instructions, when the
// broker does not answer an AMQP handshake. Call it from TestMain.
//
// It also takes this binary's shared hold on the broker (see Exclusive), so
// that tests of other packages that disturb the whole broker wait for it.
func MustReach() {
	if err := takeShared(); err != nil {
		fmt.Fprintf(os.Stderr, "testbroker: lock %s: %v\n", lockPath(), err)
		os.Exit(1)
	}
	if err := reach(); err != nil {
		fmt.Fprintf(os.Stderr, "%s\n\n(%v)\n", howToStart, err)
		os.Exit(1)
	}
}

func reach() error {
	nc, err := net.DialTimeout("tcp", Addr, 3*time.Second)
	if err != nil {
		return err
	}
	nc.Close()
	conn, err := amqp091.DialConfig(URL, amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		return err
	}
	return conn.Close()
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
