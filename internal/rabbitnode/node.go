package rabbitnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

// Timeouts of a node's life. A node starts in about 5 s on a quiet 2-core
// machine; the margins are for a machine busy with other tests.
const (
	startTimeout = 90 * time.Second
	stopTimeout  = 60 * time.Second
	// CtlTimeout bounds one rabbitmqctl or rabbitmq-diagnostics run.
	CtlTimeout = 60 * time.Second
)

// Node is one private RabbitMQ node of a Host. Its methods are safe for
// concurrent use.
type Node struct {
	// Name is the Erlang node name, e.g. mcbt-bridge-1a2b3c@localhost.
	Name string
	// Short is the part of Name given to NewNode, e.g. bridge.
	Short string
	// Dir holds its mnesia, log and config.
	Dir string

	host *Host

	mu       sync.Mutex
	port     int  // AMQP, on 127.0.0.1
	distPort int  // Erlang distribution, on 127.0.0.1
	started  bool // it ran once: its ports are fixed
	run      *nodeRun
	frozen   int // pid of the VM stopped by Freeze, 0 if none
}

// nodeRun is one run of the node's start script.
type nodeRun struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the script has exited
}

// wait reaps the start script. It runs as long as the node does: see
// IgnoreRunning.
func (r *nodeRun) wait() {
	_ = r.cmd.Wait()
	close(r.exited)
}

// IgnoreRunning is the goleak option for a leak check while nodes run:
// each has a goroutine waiting for its start script.
func IgnoreRunning() goleak.Option {
	return goleak.IgnoreAnyFunction("github.com/mcbridge/mcbridge/internal/rabbitnode.(*nodeRun).wait")
}

// errPortTaken marks a start that failed because another process took
// one of the node's ports first.
var errPortTaken = errors.New("port taken")

// Port is the node's AMQP port on 127.0.0.1.
func (n *Node) Port() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.port
}

// Addr is the node's AMQP address, 127.0.0.1:<port>.
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port())) }

// URL is the node's AMQP URL, as guest (loopback_users = none lets guest in
// from anywhere, though the node only listens on 127.0.0.1).
func (n *Node) URL() string { return "amqp://guest:guest@" + n.Addr() + "/" }

// Running reports whether the node's processes were started and not
// stopped (a frozen node is running).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.run == nil {
		return false
	}
	select {
	case <-n.run.exited:
		return false
	default:
		return true
	}
}

// pickPorts draws new AMQP and distribution ports and writes the config.
// Called with n.mu held (or before the node is shared).
func (n *Node) pickPorts() error {
	n.host.mu.Lock()
	defer n.host.mu.Unlock()
	var err error
	if n.port, err = freePort(n.host.ports); err != nil {
		return fmt.Errorf("rabbitnode: %w", err)
	}
	if n.distPort, err = freePort(n.host.ports); err != nil {
		return fmt.Errorf("rabbitnode: %w", err)
	}
	conf := fmt.Sprintf(`# A private test node of mcbridge (internal/rabbitnode).
listeners.tcp.default = 127.0.0.1:%d
loopback_users = none
vm_memory_high_watermark.relative = 0.4
log.console = false
log.file.level = info
`, n.port)
	if err := os.WriteFile(filepath.Join(n.Dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("rabbitnode: %w", err)
	}
	return nil
}

// env is the start script's environment: every file and port of the node
// is named here, so nothing of the machine's broker is used.
func (n *Node) env() []string {
	return append(n.host.baseEnv(),
		"RABBITMQ_NODENAME="+n.Name,
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.distPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.Dir, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.Dir, "rabbitmq"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(n.Dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.Dir, "enabled_plugins"),
		// The distribution port listens on loopback only, as AMQP does.
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
	)
}

// Start starts the node and returns once it completes an AMQP handshake.
// A node that ran before keeps its ports and data (durable queues and
// persistent messages survive a Stop and Start). On the first start, ports
// that another process took meanwhile are replaced.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.run != nil {
		select {
		case <-n.run.exited:
			n.run = nil // it died: start it again
		default:
			return fmt.Errorf("rabbitnode: %s is running already", n.Name)
		}
	}
	for attempt := 1; ; attempt++ {
		err := n.startOnce()
		if err == nil {
			n.started = true
			return nil
		}
		if n.started || attempt == 3 || !errors.Is(err, errPortTaken) {
			return err
		}
		if err := n.pickPorts(); err != nil {
			return err
		}
	}
}

func (n *Node) startOnce() error {
	start := time.Now()
	for _, p := range []int{n.port, n.distPort} {
		ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return fmt.Errorf("rabbitnode: %s: port %d: %w (%v)", n.Name, p, errPortTaken, err)
		}
		ln.Close()
	}
	outPath := filepath.Join(n.Dir, "server.out")
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("rabbitnode: %w", err)
	}
	defer out.Close() // the script has its own copy
	fmt.Fprintf(out, "\n== %s: start %s on 127.0.0.1:%d\n", time.Now().Format(time.RFC3339Nano), n.Name, n.port)
	// The script in the foreground: it passes SIGTERM on to the Erlang VM.
	cmd := exec.Command(n.host.scripts.server)
	cmd.Dir = n.Dir
	cmd.Env = n.env()
	// A file, not a pipe: nothing of the node may hold a pipe of ours open.
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a ^C to `go test` must not hit the node
	// before the test process has stopped it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("rabbitnode: start %s: %w\n\n%s", n.Name, err, HowToInstall())
	}
	r := &nodeRun{cmd: cmd, exited: make(chan struct{})}
	go r.wait()
	n.run = r
	if err := n.awaitAMQP(r, start.Add(startTimeout)); err != nil {
		_ = n.stopRun(r)
		n.run = nil
		return err
	}
	return nil
}

// awaitAMQP polls the node's AMQP port until a handshake with this host's
// node succeeds, the start script exits, or the deadline passes.
func (n *Node) awaitAMQP(r *nodeRun, deadline time.Time) error {
	url := "amqp://guest:guest@" + net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) + "/"
	var last error
	for {
		select {
		case <-r.exited:
			tail := n.logTail()
			err := fmt.Errorf("rabbitnode: %s exited while starting (%v); its output ends:\n%s", n.Name, r.cmd.ProcessState, tail)
			if strings.Contains(tail, "eaddrinuse") {
				err = fmt.Errorf("%w: %w", errPortTaken, err)
			}
			return err
		default:
		}
		conn, err := amqp091.DialConfig(url, amqp091.Config{Dial: amqp091.DefaultDial(time.Second)})
		if err == nil {
			// Another process may have taken the port first: only a node
			// of this host counts (a cluster's nodes all report the
			// cluster's name, which is its first node's).
			cluster, _ := conn.Properties["cluster_name"].(string)
			_ = conn.Close()
			if n.host.ownsNode(cluster) {
				return nil
			}
			last = fmt.Errorf("%w: 127.0.0.1:%d answers as %q", errPortTaken, n.port, cluster)
		} else {
			last = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rabbitnode: %s did not answer AMQP on 127.0.0.1:%d within %v (last: %v); its output ends:\n%s",
				n.Name, n.port, startTimeout, last, n.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ownsNode reports whether cluster, a cluster_name as RabbitMQ reports it,
// is one of this host's nodes. The default cluster name is the node's name
// with the machine's host name after the @, not localhost.
func (h *Host) ownsNode(cluster string) bool {
	alive, _, _ := strings.Cut(cluster, "@")
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.ContainsFunc(h.nodes, func(n *Node) bool {
		name, _, _ := strings.Cut(n.Name, "@")
		return name == alive
	})
}

// logTail is the end of the node's start script output and log file, for
// error messages.
func (n *Node) logTail() string {
	var b strings.Builder
	for _, f := range []string{filepath.Join(n.Dir, "server.out"), filepath.Join(n.Dir, "log", n.Name+".log")} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// Stop stops the node gracefully (SIGTERM: RabbitMQ shuts down as for
// rabbitmqctl stop) and returns once all its processes are gone. Its data
// stays for the next Start. Stopping a stopped node does nothing.
func (n *Node) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.run
	if r == nil {
		return nil
	}
	n.run = nil
	return n.stopRun(r)
}

// isNodeProc matches the node's processes: the start script, the Erlang
// VM and its helpers. epmd inherits the environment of the first node that
// needed it, but serves them all: it is the host's, not the node's.
func (n *Node) isNodeProc(m marked) bool {
	return m.host == n.host.Dir && m.node == n.Name && m.comm != "epmd"
}

func (n *Node) stopRun(r *nodeRun) error {
	n.frozen = 0
	for _, pid := range pidsWhere(n.isNodeProc) {
		_ = syscall.Kill(pid, syscall.SIGCONT) // a frozen VM cannot stop
	}
	var errs []error
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
		errs = append(errs, fmt.Errorf("%s did not stop within %v of SIGTERM; killed", n.Name, stopTimeout))
	}
	// The script passes SIGTERM on only once its trap is set: a VM whose
	// script was stopped early is stopped here.
	if !waitGone(n.isNodeProc, 5*time.Second) {
		if killed := endProcs(n.isNodeProc, 30*time.Second); len(killed) > 0 {
			errs = append(errs, fmt.Errorf("%s: processes %v ignored SIGTERM; killed", n.Name, killed))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rabbitnode: stop: %w", err)
	}
	return nil
}

// BeamPID is the pid of the node's Erlang VM.
func (n *Node) BeamPID() (int, error) {
	for _, m := range markedProcs() {
		if n.isNodeProc(m) && m.comm == "beam.smp" {
			return m.pid, nil
		}
	}
	return 0, fmt.Errorf("rabbitnode: no Erlang VM of %s is running", n.Name)
}

// Freeze stops the node's Erlang VM with SIGSTOP: its sockets stay open
// and nothing answers, as with a node that hangs. Thaw resumes it.
func (n *Node) Freeze() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.frozen != 0 {
		return fmt.Errorf("rabbitnode: %s is frozen already", n.Name)
	}
	pid, err := n.BeamPID()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("rabbitnode: SIGSTOP %s (pid %d): %w", n.Name, pid, err)
	}
	n.frozen = pid
	// SIGSTOP is asynchronous: return once the kernel shows it stopped.
	deadline := time.Now().Add(5 * time.Second)
	for procState(pid) != 'T' {
		if time.Now().After(deadline) {
			return fmt.Errorf("rabbitnode: %s (pid %d) not stopped 5s after SIGSTOP", n.Name, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Thaw resumes a VM stopped by Freeze (SIGCONT); without one it does
// nothing.
func (n *Node) Thaw() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.frozen == 0 {
		return nil
	}
	pid := n.frozen
	n.frozen = 0
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("rabbitnode: SIGCONT %s (pid %d): %w", n.Name, pid, err)
	}
	return nil
}

// procState is the state letter of /proc/<pid>/stat (R, S, T…), 0 if
// unknown.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// Ctl runs `rabbitmqctl -n <node> -q args…` against this node and returns
// its output. Every call names the node: no other node is ever addressed.
func (n *Node) Ctl(args ...string) (string, error) {
	return n.CtlWithin(CtlTimeout, args...)
}

// CtlWithin is Ctl with a time limit of d.
func (n *Node) CtlWithin(d time.Duration, args ...string) (string, error) {
	return n.cli(d, n.host.scripts.ctl, args)
}

// Diagnostics runs `rabbitmq-diagnostics -n <node> -q args…`.
func (n *Node) Diagnostics(args ...string) (string, error) {
	return n.cli(CtlTimeout, n.host.scripts.diagnostics, args)
}

func (n *Node) cli(d time.Duration, prog string, args []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, append([]string{"-n", n.Name, "-q"}, args...)...)
	cmd.Dir = n.host.Dir
	// The host's home (cookie), epmd and marker; the CLI's own
	// distribution port is derived from the node's.
	cmd.Env = append(n.host.baseEnv(), "RABBITMQ_DIST_PORT="+strconv.Itoa(n.distPortNow()))
	// If the context kills the CLI, a child of it may keep the output
	// pipe open for a while.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s -n %s %s: %w: %s", filepath.Base(prog), n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (n *Node) distPortNow() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.distPort
}

// AwaitStartup waits until the node's rabbit application runs (rabbitmqctl
// await_startup), e.g. after `rabbitmqctl start_app`. await_startup fails
// at once while the node is not registered with epmd yet, so it is
// retried.
func (n *Node) AwaitStartup(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("rabbitnode: %s did not start within %v; its output ends:\n%s", n.Name, within, n.logTail())
		}
		if _, err := n.CtlWithin(min(left, 30*time.Second), "await_startup", "--timeout", "25"); err == nil {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
}
