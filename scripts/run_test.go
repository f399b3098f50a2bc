// Package scripts holds the shell scripts behind make run and make test;
// this test drives run.sh's decisions with fake system commands.
package scripts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// listenEnv makes the test binary a fake broker: it listens on the address
// in the variable until killed (see fakeServer).
const listenEnv = "SCRIPTS_TEST_LISTEN"

func TestMain(m *testing.M) {
	if addr := os.Getenv(listenEnv); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			c.Close()
		}
	}
	goleak.VerifyTestMain(m)
}

// fakeServer is what the fake rabbitmq-server -detached and systemctl start
// run: the test binary as a broker that answers on $FAKE_ADDR.
const fakeServer = `echo "$0 $*" >>"$FAKE_LOG"
case "$*" in
-detached|"start rabbitmq-server")
	SCRIPTS_TEST_LISTEN=$FAKE_ADDR "$FAKE_TESTBIN" -test.run='^$' >/dev/null 2>&1 &
	echo $! >"$FAKE_STATE/broker.pid"
	;;
esac
`

// fakes are the system commands run.sh may call, as shell scripts that log
// their call to $FAKE_LOG (as "<name> <args>"). rabbitmq-server and
// rabbitmqctl are in lib/ until installed (copied to bin/ by the fake
// apt-get, or by the test).
var fakes = map[string]string{
	"bin/id": `echo "$FAKE_UID"`,
	"bin/apt-get": `echo "apt-get $*" >>"$FAKE_LOG"
[ "$1" = install ] && cp "$FAKE_LIB/rabbitmq-server" "$FAKE_LIB/rabbitmqctl" "$FAKE_BIN/"
exit 0`,
	"bin/go": `echo "go $*" >>"$FAKE_LOG"
if [ "$1" = build ] && [ "$2" = -o ]; then
	printf '#!/bin/sh\necho "mcbridge $*" >>"$FAKE_LOG"\n' >"$3"
	chmod +x "$3"
fi`,
	"bin/systemctl":       `name=systemctl; ` + strings.ReplaceAll(fakeServer, "$0", "$name"),
	"lib/rabbitmq-server": `name=rabbitmq-server; ` + strings.ReplaceAll(fakeServer, "$0", "$name"),
	"lib/rabbitmqctl":     `echo "rabbitmqctl $*" >>"$FAKE_LOG"`,
}

// realTools are the programs run.sh and the fakes use, linked into the fake
// PATH.
var realTools = []string{"bash", "sh", "cat", "cp", "chmod", "dirname", "mkdir", "sed", "sleep"}

type machine struct {
	root      bool
	debian    bool // apt-get is there
	installed bool // rabbitmq-server is there
	running   bool // the broker answers already
	noGo      bool
}

type outcome struct {
	code           int
	stderr         string
	calls          []string
	brokerAnswered bool
}

// runScript runs scripts/run.sh -log-level debug on a fake machine.
func runScript(t *testing.T, m machine) outcome {
	t.Helper()
	dir := t.TempDir()
	bin, lib, state := filepath.Join(dir, "bin"), filepath.Join(dir, "lib"), filepath.Join(dir, "state")
	for _, d := range []string{bin, lib, state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range fakes {
		if name == "bin/apt-get" && !m.debian || name == "bin/go" && m.noGo {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if m.installed {
		for _, f := range []string{"rabbitmq-server", "rabbitmqctl"} {
			b, _ := os.ReadFile(filepath.Join(lib, f))
			if err := os.WriteFile(filepath.Join(bin, f), b, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tool := range realTools {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}

	// The broker's address: a port that answers only if the machine
	// "runs" a broker or the script starts one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if m.running {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close() })
	} else {
		ln.Close()
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(state, "broker.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})

	uid := "1000"
	if m.root {
		uid = "0"
	}
	logFile := filepath.Join(dir, "calls.log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "run.sh", "-log-level", "debug")
	cmd.Env = []string{
		"PATH=" + bin, "HOME=" + dir, "FAKE_UID=" + uid, "FAKE_LOG=" + logFile,
		"FAKE_BIN=" + bin, "FAKE_LIB=" + lib, "FAKE_STATE=" + state,
		"FAKE_ADDR=" + addr, "FAKE_TESTBIN=" + os.Args[0], "MCBRIDGE_BROKER_ADDR=" + addr,
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var o outcome
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		o.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run.sh: %v\n%s", err, stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("run.sh did not finish within 60s\n%s", stderr.String())
	}
	o.stderr = stderr.String()
	if b, err := os.ReadFile(logFile); err == nil {
		o.calls = strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		o.brokerAnswered = true
	}
	// Paths in the calls are the temp dir's: show them as $HOME. run.sh
	// retries await_startup while the broker boots: repeats count once.
	var calls []string
	for _, c := range o.calls {
		c = strings.ReplaceAll(c, dir, "$HOME")
		if len(calls) == 0 || calls[len(calls)-1] != c {
			calls = append(calls, c)
		}
	}
	o.calls = calls
	return o
}

// startCall is how run.sh starts the broker on this machine.
func startCall() []string {
	if st, err := os.Stat("/run/systemd/system"); err == nil && st.IsDir() {
		return []string{"systemctl start rabbitmq-server"}
	}
	return []string{"rabbitmq-server -detached"}
}

// run.sh sets up what is missing, starts mcbridge only once the broker
// answers, and otherwise says what to do and changes nothing.
func TestRunScript(t *testing.T) {
	build := []string{"go build -o $HOME/.cache/mcbridge/mcbridge ./cmd/mcbridge", "mcbridge -log-level debug"}
	await := []string{"rabbitmqctl -q await_startup --timeout 10"}
	install := []string{"apt-get update -q", "apt-get install -y -q rabbitmq-server"}
	join := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name       string
		m          machine
		wantCalls  []string
		wantStderr string // for a refusal: exit 1 and this in stderr
	}{
		{"broker answers", machine{debian: true, installed: true, running: true}, build, ""},
		{"broker answers, not Debian, not root", machine{running: true}, build, ""},
		{"installed, stopped, root", machine{root: true, debian: true, installed: true}, join(startCall(), await, build), ""},
		{"not installed, Debian, root", machine{root: true, debian: true}, join(install, startCall(), await, build), ""},
		{"installed, stopped, not root", machine{debian: true, installed: true}, nil,
			"sudo systemctl start rabbitmq-server     (or, without systemd: sudo rabbitmq-server -detached)"},
		{"not installed, Debian, not root", machine{debian: true}, nil, "sudo apt-get install rabbitmq-server"},
		{"not installed, not Debian", machine{root: true}, nil, "This is not a Debian or Ubuntu\nmachine"},
		{"no Go", machine{root: true, debian: true, installed: true, running: true, noGo: true}, nil, "the go command is not installed: install Go 1."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := runScript(t, tc.m)
			if tc.wantStderr != "" {
				if o.code != 1 || !strings.Contains(o.stderr, tc.wantStderr) {
					t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and %q", o.code, o.stderr, tc.wantStderr)
				}
			} else if o.code != 0 {
				t.Errorf("exit %d, stderr:\n%s", o.code, o.stderr)
			}
			if strings.Join(o.calls, "\n") != strings.Join(tc.wantCalls, "\n") {
				t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(o.calls, "\n  "), strings.Join(tc.wantCalls, "\n  "))
			}
			if wantUp := tc.m.running || tc.wantStderr == ""; o.brokerAnswered != wantUp {
				t.Errorf("broker answers afterwards: %v, want %v", o.brokerAnswered, wantUp)
			}
		})
	}
}
