package testbroker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// exclusiveMu serialises the tests of this binary that disturb the whole
// node.
var exclusiveMu sync.Mutex

// Exclusive gives the test this binary's node to itself among the tests
// that disturb all of it (MemoryAlarm, SetConsumerTimeout, SetEnv,
// StopNode, FreezeNode all call it): it waits until the previous one has
// ended and keeps the next waiting until this test ends. Tests of the
// binary that run in parallel with it and do not call it are not stopped:
// arranging that is the package's business. Do not call it twice in one
// test (it does not nest).
func Exclusive(t testing.TB) {
	t.Helper()
	exclusiveMu.Lock()
	t.Cleanup(exclusiveMu.Unlock)
}

// Rabbitmqctl runs `rabbitmqctl -n <private node> -q args…` and returns its
// output.
func Rabbitmqctl(args ...string) (string, error) {
	if node == nil {
		return "", errors.New(notStarted)
	}
	return node.Ctl(args...)
}

// memoryWatermark is the private node's configured
// vm_memory_high_watermark (see rabbitnode), restored after an alarm.
const memoryWatermark = "0.4"

// MemoryAlarm raises a broker-wide memory alarm (every publishing connection
// is blocked) until the returned function or, at the latest, the test's
// cleanup clears it. It holds the node exclusively meanwhile.
func MemoryAlarm(t testing.TB) (clear func()) {
	t.Helper()
	Exclusive(t)
	var once sync.Once
	clear = func() {
		once.Do(func() {
			if _, err := Rabbitmqctl("set_vm_memory_high_watermark", memoryWatermark); err != nil {
				t.Errorf("restore the memory watermark: %v", err)
				return
			}
			// The next test must not meet an alarm that is still on.
			if err := waitAlarm(false); err != nil {
				t.Errorf("clear the memory alarm: %v", err)
			}
		})
	}
	// Registered after Exclusive's cleanup, so it runs before the node is
	// given back.
	t.Cleanup(clear)
	if _, err := Rabbitmqctl("set_vm_memory_high_watermark", "0"); err != nil {
		t.Fatalf("raise a memory alarm: %v", err)
	}
	// The broker's memory monitor raises the alarm on its own tick: a
	// busy broker may still accept a publish right after the command.
	if err := waitAlarm(true); err != nil {
		t.Fatalf("raise a memory alarm: %v", err)
	}
	return clear
}

// waitAlarm polls rabbitmq-diagnostics until a memory alarm is (or is no
// longer) reported, for at most 15 s.
func waitAlarm(on bool) error {
	if node == nil {
		return errors.New(notStarted)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := node.Diagnostics("alarms")
		if err == nil && strings.Contains(out, "Memory alarm") == on {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("memory alarm still %v after 15s: %s (%v)", !on, strings.TrimSpace(out), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// SetEnv sets a variable of the node's rabbit application (rabbitmqctl
// eval application:set_env) for the test, and restores it (or unsets it)
// in a cleanup that always runs. It holds the node exclusively. Only what
// reads the variable afterwards sees the new value (e.g. channels opened
// afterwards, for consumer_timeout).
func SetEnv(t testing.TB, key, value string) {
	t.Helper()
	Exclusive(t)
	setEnv(t, key, value)
}

func setEnv(t testing.TB, key, value string) {
	t.Helper()
	old, err := Rabbitmqctl("eval", fmt.Sprintf("application:get_env(rabbit, %s).", key))
	if err != nil {
		t.Fatal(err)
	}
	old = strings.TrimSpace(old)
	restore := fmt.Sprintf("application:unset_env(rabbit, %s).", key)
	if v, ok := strings.CutPrefix(old, "{ok,"); ok {
		restore = fmt.Sprintf("application:set_env(rabbit, %s, %s).", key, strings.TrimSuffix(v, "}"))
	}
	t.Cleanup(func() {
		if _, err := Rabbitmqctl("eval", restore); err != nil {
			t.Errorf("restore rabbit %s: %v", key, err)
		}
	})
	if _, err := Rabbitmqctl("eval", fmt.Sprintf("application:set_env(rabbit, %s, %s).", key, value)); err != nil {
		t.Fatal(err)
	}
}

// SetConsumerTimeout lowers (or raises) the node's consumer_timeout to d
// for the test and restores it in a cleanup. The broker checks the timeout
// on each channel's tick, every minute by default: the tick is shortened
// to d/4 (at least 100 ms) as well, so the timeout strikes within about
// 1.25 d. Only channels opened afterwards see either. It holds the node
// exclusively.
func SetConsumerTimeout(t testing.TB, d time.Duration) {
	t.Helper()
	Exclusive(t)
	tick := max(d/4, 100*time.Millisecond)
	setEnv(t, "consumer_timeout", strconv.FormatInt(d.Milliseconds(), 10))
	setEnv(t, "channel_tick_interval", strconv.FormatInt(tick.Milliseconds(), 10))
}

// StopNode stops this binary's node as a broker restart begins: RabbitMQ
// shuts down gracefully and its clients' connections close; until
// StartNode, a dial is refused. Its data stays: durable queues and
// persistent messages are there again after StartNode, on the same port.
// If the test does not start it again, its cleanup does. It holds the node
// exclusively.
func StopNode(t testing.TB) {
	t.Helper()
	Exclusive(t)
	n := Node(t)
	t.Cleanup(func() {
		if n.Running() {
			return
		}
		if err := n.Start(); err != nil {
			t.Errorf("start the broker node again: %v", err)
		}
	})
	start := time.Now()
	if err := n.Stop(); err != nil {
		t.Fatalf("stop the broker node: %v", err)
	}
	t.Logf("broker node %s stopped in %v", n.Name, time.Since(start).Round(time.Millisecond))
}

// StartNode starts the node StopNode stopped and returns once it answers
// AMQP.
func StartNode(t testing.TB) {
	t.Helper()
	n := Node(t)
	start := time.Now()
	if err := n.Start(); err != nil {
		t.Fatalf("start the broker node: %v", err)
	}
	t.Logf("broker node %s started in %v", n.Name, time.Since(start).Round(time.Millisecond))
}

// FreezeNode stops the node's Erlang VM with SIGSTOP: connections stay
// open and nothing answers, as with a broker that hangs. thaw (SIGCONT)
// resumes it; the test's cleanup always does. It holds the node
// exclusively.
func FreezeNode(t testing.TB) (thaw func()) {
	t.Helper()
	Exclusive(t)
	n := Node(t)
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			if err := n.Thaw(); err != nil {
				t.Errorf("thaw the broker node: %v", err)
			}
		})
	}
	t.Cleanup(thaw)
	if err := n.Freeze(); err != nil {
		t.Fatalf("freeze the broker node: %v", err)
	}
	return thaw
}

// CloseConnections closes, from the broker side (rabbitmqctl
// close_connection), every connection whose client-given name starts with
// prefix, and returns how many it closed: what an operator's close looks
// like to the client. The name column of list_connections is the peer address; the name the
// client gave is in its properties: {"connection_name","<name>"}.
func CloseConnections(t testing.TB, prefix string) int {
	t.Helper()
	n, _ := closeConnections(t, prefix)
	return n
}

// MustCloseConnections is CloseConnections for a test that needs at least
// one to close: none fails the test, with the broker's listing.
func MustCloseConnections(t testing.TB, prefix string) int {
	t.Helper()
	n, listing := closeConnections(t, prefix)
	if n == 0 {
		t.Fatalf("no connection named %q in:\n%s", prefix, listing)
	}
	return n
}

func closeConnections(t testing.TB, prefix string) (n int, listing string) {
	t.Helper()
	out, err := Rabbitmqctl("list_connections", "pid", "client_properties")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"connection_name","%s`, prefix)
	for _, line := range strings.Split(out, "\n") {
		pid, props, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok || !strings.Contains(props, want) {
			continue
		}
		if _, err := Rabbitmqctl("close_connection", strings.TrimSpace(pid), "closed by test"); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n, out
}
