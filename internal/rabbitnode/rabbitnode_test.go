package rabbitnode

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

// helperEnv makes the test binary a helper process that starts a host and
// a node, prints them, and waits to be killed (see runHelper).
const helperEnv = "MCBRIDGE_RABBITNODE_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	goleak.VerifyTestMain(m)
}

// helperReport is what the helper process prints once its node runs.
type helperReport struct {
	Dir         string
	Node        string
	Addr        string
	WatchdogPid int
}

func runHelper() int {
	h, err := NewHost("mcbt-helper")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	n, err := h.NewNode("victim")
	if err == nil {
		err = n.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = h.Close()
		return 1
	}
	b, _ := json.Marshal(helperReport{Dir: h.Dir, Node: n.Name, Addr: n.Addr(), WatchdogPid: h.watchdog.Process.Pid})
	fmt.Printf("%s\n", b)
	select {} // until killed
}

// startHelper runs the helper process and returns its report.
func startHelper(t *testing.T) (*exec.Cmd, helperReport) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper process: %v", err)
	}
	var r helperReport
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("helper process printed %q: %v", line, err)
	}
	return cmd, r
}

// hostProcs lists the live processes of the host whose directory is dir.
func hostProcs(dir string) []marked {
	var out []marked
	for _, m := range markedProcs() {
		if m.host == dir {
			out = append(out, m)
		}
	}
	return out
}

// waitHostGone fails the test unless every process of the host and its
// directory are gone within d.
func waitHostGone(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		procs := hostProcs(dir)
		_, statErr := os.Stat(dir)
		if len(procs) == 0 && errors.Is(statErr, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: processes %+v of %s still run, directory: %v", d, procs, dir, statErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// listeners lists the IPv4 and IPv6 addresses listening on port, from
// /proc/net/tcp and tcp6 (state 0A is LISTEN).
func listeners(t *testing.T, port int) []string {
	t.Helper()
	var out []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" {
				continue
			}
			hexIP, hexPort, _ := strings.Cut(fields[1], ":")
			if hexPort != fmt.Sprintf("%04X", port) {
				continue
			}
			ip := make(net.IP, len(hexIP)/2)
			for i := range ip {
				fmt.Sscanf(hexIP[2*i:2*i+2], "%02X", &ip[i])
			}
			// The kernel prints each 32-bit word in host (little-endian)
			// order.
			for w := 0; w+4 <= len(ip); w += 4 {
				ip[w], ip[w+1], ip[w+2], ip[w+3] = ip[w+3], ip[w+2], ip[w+1], ip[w]
			}
			out = append(out, ip.String())
		}
	}
	return out
}

func dialable(addr string) bool {
	conn, err := amqp091.DialConfig("amqp://guest:guest@"+addr+"/", amqp091.Config{Dial: amqp091.DefaultDial(2 * time.Second)})
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// A node starts on private ports, answers rabbitmqctl under its own name,
// stops with no process left, starts again on the same port, and Close
// leaves nothing behind.
func TestNodeLifecycle(t *testing.T) {
	start := time.Now()
	h, err := NewHost("mcbt-rabbitnode")
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = h.Close()
		}
	})
	n, err := h.NewNode("life")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s up on %s in %v", n.Name, n.Addr(), time.Since(start).Round(time.Millisecond))
	if p := n.Port(); p == 5672 || p < portMin || p >= portMax {
		t.Errorf("AMQP port %d, want one in [%d, %d)", p, portMin, portMax)
	}
	if !dialable(n.Addr()) {
		t.Fatalf("no AMQP handshake on %s", n.Addr())
	}
	out, err := n.Ctl("eval", "node().")
	if err != nil || strings.TrimSpace(out) != "'"+n.Name+"'" {
		t.Fatalf("rabbitmqctl eval node(): %q %v, want '%s'", out, err, n.Name)
	}
	// The Erlang cookie is the host's own, in its directory.
	out, err = n.Ctl("eval", "erlang:get_cookie().")
	cookie, _ := os.ReadFile(filepath.Join(h.Dir, ".erlang.cookie"))
	if err != nil || strings.TrimSpace(out) != "'"+string(cookie)+"'" {
		t.Errorf("node cookie %q %v, want the host's %q", out, err, cookie)
	}
	// AMQP and distribution listen on loopback only.
	for _, p := range []int{n.Port(), n.distPortNow()} {
		if got := listeners(t, p); strings.Join(got, ",") != "127.0.0.1" {
			t.Errorf("port %d: listening on %v, want 127.0.0.1 only", p, got)
		}
	}

	port := n.Port()
	t0 := time.Now()
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(t0).Round(time.Millisecond))
	if n.Running() || dialable(n.Addr()) {
		t.Fatal("the node still answers after Stop")
	}
	if pids := pidsWhere(n.isNodeProc); len(pids) > 0 {
		t.Fatalf("processes %v of the node survived Stop", pids)
	}
	t0 = time.Now()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("started again in %v", time.Since(t0).Round(time.Millisecond))
	if n.Port() != port || !dialable(n.Addr()) {
		t.Fatalf("after a restart the node answers on %d (%v), want %d", n.Port(), dialable(n.Addr()), port)
	}

	t0 = time.Now()
	closed = true
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("host closed in %v", time.Since(t0).Round(time.Millisecond))
	waitHostGone(t, h.Dir, time.Second)
}

// A test process killed with SIGKILL cannot stop its nodes: its watchdog
// does, and removes the host's files.
func TestWatchdogStopsNodesOfAKilledProcess(t *testing.T) {
	cmd, r := startHelper(t)
	if !dialable(r.Addr) {
		t.Fatalf("the helper's node does not answer on %s", r.Addr)
	}
	if len(hostProcs(r.Dir)) == 0 {
		t.Fatal("no marked process of the helper's host")
	}
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitHostGone(t, r.Dir, 60*time.Second)
	t.Logf("the watchdog stopped %s %v after the kill", r.Node, time.Since(t0).Round(time.Millisecond))
	if dialable(r.Addr) {
		t.Fatal("the node still answers")
	}
}

// When the watchdog died too, the next host reaps what the dead process
// left, and leaves live hosts alone.
func TestNewHostReapsOrphans(t *testing.T) {
	live, err := NewHost("mcbt-live")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Close() })
	liveNode, err := live.NewNode("bystander")
	if err == nil {
		err = liveNode.Start()
	}
	if err != nil {
		t.Fatal(err)
	}

	cmd, r := startHelper(t)
	if err := syscall.Kill(-r.WatchdogPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(hostProcs(r.Dir)) == 0 {
		t.Fatal("nothing left to reap: did the watchdog survive?")
	}
	h, err := NewHost("mcbt-reaper")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	waitHostGone(t, r.Dir, time.Second)
	if !liveNode.Running() || !dialable(liveNode.Addr()) {
		t.Fatal("the reaper stopped a live host's node")
	}
}

// Without RabbitMQ, NewHost fails at once and says how to install it.
func TestNotInstalled(t *testing.T) {
	old := packageScriptDir
	packageScriptDir = filepath.Join(t.TempDir(), "none")
	t.Cleanup(func() { packageScriptDir = old })
	t.Setenv("PATH", t.TempDir())
	t0 := time.Now()
	_, err := NewHost("mcbt-none")
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("NewHost without RabbitMQ: %v, want ErrNotInstalled", err)
	}
	if time.Since(t0) > time.Second {
		t.Errorf("took %v to notice", time.Since(t0))
	}
	for _, want := range []string{"rabbitmq-server not found", "install"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// A port taken between NewNode and the first Start is replaced: the node
// starts on other ports, and the taker keeps its own.
func TestFirstStartReplacesTakenPort(t *testing.T) {
	h, err := NewHost("mcbt-rabbitnode")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	n, err := h.NewNode("taken")
	if err != nil {
		t.Fatal(err)
	}
	taken := n.Port()
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", taken))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if n.Port() == taken || !dialable(n.Addr()) {
		t.Fatalf("node on port %d (answers: %v), want one other than the taken %d", n.Port(), dialable(n.Addr()), taken)
	}
}

// sameRoot tells this machine's processes from those in a chroot or
// container on the same kernel, whose nodes the reaper must not touch.
func TestSameRoot(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if !sameRoot(cmd.Process.Pid) {
		t.Errorf("a child process is not under our root")
	}
	if sameRoot(1 << 30) {
		t.Errorf("a process that does not exist is under our root")
	}
}
