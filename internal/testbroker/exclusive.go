package testbroker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Test binaries of different packages run in parallel under `go test ./...`
// and share the one broker. A few tests disturb the whole broker (a memory
// alarm blocks every publisher on it, a lowered consumer_timeout closes
// anybody's channel): they must not overlap with other packages' tests.
//
// They coordinate through an flock(2) on a file in the temp directory:
// MustReach takes it shared for the life of the test binary, and Exclusive
// converts this binary's lock to exclusive, which waits until no other test
// binary that uses the broker is running, and blocks new ones in MustReach
// until the test's cleanup gives the lock back. flock conversion drops the
// shared lock before waiting, so two binaries asking for it at once do not
// deadlock: one waits for the other.
var lock struct {
	mu sync.Mutex
	f  *os.File
}

// lockPath is the coordination file; the same for every test binary.
func lockPath() string { return filepath.Join(os.TempDir(), "mcbridge-testbroker.lock") }

func takeShared() error {
	lock.mu.Lock()
	defer lock.mu.Unlock()
	if lock.f != nil {
		return nil
	}
	f, err := os.OpenFile(lockPath(), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return err
	}
	if err := flock(f, syscall.LOCK_SH); err != nil {
		f.Close()
		return err
	}
	lock.f = f
	return nil
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// exclusiveMu serialises Exclusive within one test binary.
var exclusiveMu sync.Mutex

// Exclusive gives the test the broker to itself: it returns once no other
// package's test binary uses the broker, and keeps them waiting until the
// test ends. Keep the exclusive part short; tests of this binary that run
// in parallel with it are not stopped (the caller's package arranges that).
func Exclusive(t testing.TB) {
	t.Helper()
	if err := takeShared(); err != nil {
		t.Fatalf("broker lock %s: %v", lockPath(), err)
	}
	exclusiveMu.Lock()
	if err := flock(lock.f, syscall.LOCK_EX); err != nil {
		exclusiveMu.Unlock()
		t.Fatalf("broker lock %s: %v", lockPath(), err)
	}
	t.Cleanup(func() {
		// Back to shared: this binary still uses the broker.
		if err := flock(lock.f, syscall.LOCK_SH); err != nil {
			t.Errorf("broker lock %s: %v", lockPath(), err)
		}
		exclusiveMu.Unlock()
	})
}

// Rabbitmqctl runs `rabbitmqctl -q args…` and returns its output.
func Rabbitmqctl(args ...string) (string, error) {
	out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MemoryAlarm raises a broker-wide memory alarm (every publishing connection
// is blocked) until the returned function or, at the latest, the test's
// cleanup clears it. It holds the broker exclusively meanwhile.
func MemoryAlarm(t testing.TB) (clear func()) {
	t.Helper()
	Exclusive(t)
	var once sync.Once
	clear = func() {
		once.Do(func() {
			if _, err := Rabbitmqctl("set_vm_memory_high_watermark", "0.4"); err != nil {
				t.Errorf("restore the memory watermark: %v", err)
				return
			}
			// The next test must not meet an alarm that is still on.
			if err := waitAlarm(false); err != nil {
				t.Errorf("clear the memory alarm: %v", err)
			}
		})
	}
	// Registered after Exclusive's cleanup, so it runs before the lock is
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
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := exec.Command("rabbitmq-diagnostics", "-q", "alarms").CombinedOutput()
		if err == nil && strings.Contains(string(out), "Memory alarm") == on {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("memory alarm still %v after 15s: %s (%v)", !on, strings.TrimSpace(string(out)), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
