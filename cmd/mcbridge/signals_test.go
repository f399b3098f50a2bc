package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// runMainEnv makes the test binary run main() instead of the tests: the
// signal handling under test lives in main.
const runMainEnv = "MCBRIDGE_TEST_RUN_MAIN"

// process is mcbridge running as a process of its own.
type process struct {
	cmd   *exec.Cmd
	lines chan map[string]any // its JSON log lines
	done  chan struct{}       // closed once it exited
}

// startProcess runs mcbridge (this test binary as main) on yamlText.
func startProcess(t *testing.T, yamlText string) *process {
	t.Helper()
	mustBePrivateYAML(t, yamlText)
	file := filepath.Join(t.TempDir(), "mcbridge.yml")
	if err := os.WriteFile(file, []byte(yamlText), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-config", file, "-log-format", "json")
	// The race detector would sleep a second at exit.
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "GORACE=atexit_sleep_ms=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, lines: make(chan map[string]any, 1000), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				select {
				case p.lines <- l:
				default:
				}
			}
		}
		close(p.lines)
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitLog waits for a log line with that message and returns it.
func (p *process) waitLog(t *testing.T, msg string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("mcbridge exited before logging %q", msg)
			}
			if l["msg"] == msg {
				return l
			}
		case <-deadline:
			t.Fatalf("mcbridge did not log %q within %v", msg, within)
		}
	}
}

// waitExit waits for the process to end and returns how, failing the test
// when it takes longer than within.
func (p *process) waitExit(t *testing.T, within time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState
	case <-time.After(within):
		t.Fatalf("mcbridge did not exit within %v", within)
		return nil
	}
}

// A broker that accepts connections and never answers: a SIGTERM while
// mcbridge dials it (the AMQP handshake waits up to 5 s) stops mcbridge at
// once, and cleanly.
func TestSignalWhileDialling(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	p := startProcess(t, fmt.Sprintf("listen: 127.0.0.1:0\nmetrics_listen: \"\"\namqp:\n  urls: [\"amqp://guest:guest@%s/\"]\n", ln.Addr()))
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("mcbridge did not dial the broker")
	}
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st := p.waitExit(t, 3*time.Second)
	if took := time.Since(sent); took > time.Second {
		t.Errorf("mcbridge took %v to stop while dialling", took)
	}
	if !st.Success() {
		t.Errorf("mcbridge stopped by a signal while dialling exited with %v, want 0", st)
	}
}

// A graceful stop waits for the command in hand (here a set whose queue
// is stuck, so its confirm does not come) up to the grace period; a second
// signal ends the process at once.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	q := testbroker.Name(t, "stuck")
	p := startProcess(t, fmt.Sprintf(`listen: 127.0.0.1:0
metrics_listen: ""
amqp:
  urls: [%q]
  confirm_timeout: 60s
queues:
  - name: %s
`, testbroker.URL, q))
	addr, _ := p.waitLog(t, "mcbridge serving", 30*time.Second)["listen"].(string)
	c := mctest.MustDialConn(t, addr)
	// A first set, before the queue is stuck, so that the second waits
	// for its confirm (not for a declaration).
	if r, err := c.Set(q, "first"); r != "STORED" || err != nil {
		t.Fatalf("set: %q %v", r, err)
	}
	testbroker.SuspendQueue(t, q)
	if err := c.Send("set " + q + " 0 0 1\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	testbroker.Eventually(t, 10*time.Second, "the set to wait for its confirm", func() bool {
		out, err := testbroker.Rabbitmqctl("list_channels", "messages_unconfirmed")
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(out) {
			if f != "0" {
				return true
			}
		}
		return false
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "shutting down; a second signal stops at once", 5*time.Second)
	// Still waiting for the set's confirm, within its grace period.
	select {
	case <-p.done:
		t.Fatal("mcbridge exited before the command in hand was done")
	case <-time.After(500 * time.Millisecond):
	}
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st := p.waitExit(t, 3*time.Second)
	if took := time.Since(sent); took > time.Second {
		t.Errorf("mcbridge took %v to stop after the second signal", took)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("after the second signal mcbridge ended with %v, want killed by SIGTERM", st)
	}
	if r, _ := c.Line(); strings.HasPrefix(r, "STORED") {
		t.Errorf("the stuck set was answered %q", r)
	}
}
