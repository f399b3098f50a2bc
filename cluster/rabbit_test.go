package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// node is one RabbitMQ node of the test cluster.
type node struct {
	short string // rmqa
	name  string // rmqa@localhost
	port  int    // AMQP, on 127.0.0.1
	dist  int    // Erlang distribution
	dir   string // its mnesia, log and config, owned by rabbitmq
}

func (n *node) url() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.port) }

// nodes are the cluster, in amqp.urls order; nodes[0] is the one the others
// join.
var nodes = []*node{
	{short: "rmqa", name: "rmqa@localhost", port: 5701, dist: 25701},
	{short: "rmqb", name: "rmqb@localhost", port: 5702, dist: 25702},
	{short: "rmqc", name: "rmqc@localhost", port: 5703, dist: 25703},
}

func urls() []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.url())
	}
	return out
}

// nodeByPort maps an AMQP port to its node (nil: not ours).
func nodeByPort(port int) *node {
	for _, n := range nodes {
		if n.port == port {
			return n
		}
	}
	return nil
}

const howToInstall = `The cluster tests start three RabbitMQ nodes of their own (rmqa, rmqb, rmqc
on 127.0.0.1:5701-5703) and need rabbitmq-server and rabbitmqctl, run as root
(the server script drops to the rabbitmq user). On Debian:
    apt-get install rabbitmq-server
(.ci/run installs it). The machine's own broker on 5672 is left alone.`

// ctlTimeout bounds one rabbitmqctl call.
const ctlTimeout = 60 * time.Second

// ctl runs `rabbitmqctl -n <node> -q args…` and returns its output. Every
// call names its node: the default node (rabbit@…, 5672) is never touched.
func ctl(nodeName string, args ...string) (string, error) {
	return ctlWithin(ctlTimeout, nodeName, args...)
}

func ctlWithin(d time.Duration, nodeName string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-n", nodeName, "-q"}, args...)...)
	// The script runs the CLI through su; if the context kills su, the
	// CLI may keep the output pipe open for a while.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl -n %s %s: %v: %s", nodeName, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// clusterRun is the test cluster of this test binary.
type clusterRun struct {
	dir      string
	lock     *os.File
	watchdog *exec.Cmd
	wdPipe   *os.File // closing it makes the watchdog stop the nodes
	log      *os.File // output of rabbitmq-server and the watchdog
}

// lockPath serialises cluster test runs on this machine: two runs would
// share node names and ports.
func lockPath() string { return filepath.Join(os.TempDir(), "mcbridge-cluster.lock") }

// startCluster starts the three nodes and joins rmqb and rmqc to rmqa. On
// error the caller still calls stop.
func startCluster() (*clusterRun, error) {
	for _, bin := range []string{"rabbitmq-server", "rabbitmqctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found: %v\n\n%s", bin, err, howToInstall)
		}
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("must run as root (the node directories are chowned to rabbitmq)\n\n%s", howToInstall)
	}
	ru, err := user.Lookup("rabbitmq")
	if err != nil {
		return nil, fmt.Errorf("user rabbitmq: %v\n\n%s", err, howToInstall)
	}
	uid, _ := strconv.Atoi(ru.Uid)
	gid, _ := strconv.Atoi(ru.Gid)
	// rabbitmq-server and rabbitmqctl both run as rabbitmq (the scripts
	// drop to it) and so share the cookie of the machine's broker.
	cookie := filepath.Join(ru.HomeDir, ".erlang.cookie")
	if _, err := os.Stat(cookie); err != nil {
		return nil, fmt.Errorf("Erlang cookie %s: %v (start the default broker once: rabbitmq-server -detached)", cookie, err)
	}

	c := &clusterRun{}
	if c.lock, err = lockFile(lockPath(), 6*time.Minute); err != nil {
		return c, err
	}
	// An earlier run that was killed may have left nodes and files behind
	// (its watchdog stops the nodes, but keeps nothing else tidy).
	stopNodes()
	if old, _ := filepath.Glob(filepath.Join(os.TempDir(), "mcbridge-cluster-*")); len(old) > 0 {
		for _, d := range old {
			_ = os.RemoveAll(d)
		}
	}
	for _, n := range nodes {
		if err := portFree(n.port); err != nil {
			return c, fmt.Errorf("node %s: %v", n.name, err)
		}
	}

	if c.dir, err = os.MkdirTemp(os.TempDir(), "mcbridge-cluster-"); err != nil {
		return c, err
	}
	if c.log, err = os.Create(filepath.Join(c.dir, "server.out")); err != nil {
		return c, err
	}
	for _, n := range nodes {
		n.dir = filepath.Join(c.dir, n.short)
		for _, d := range []string{"mnesia", "log"} {
			if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
				return c, err
			}
		}
		conf := fmt.Sprintf("# mcbridge cluster test node\nlisteners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", n.port)
		if err := os.WriteFile(filepath.Join(n.dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
			return c, err
		}
		if err := os.WriteFile(filepath.Join(n.dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
			return c, err
		}
	}
	if err := chownTree(c.dir, uid, gid); err != nil {
		return c, err
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return c, err
	}
	if err := c.startWatchdog(); err != nil {
		return c, err
	}

	for _, n := range nodes {
		if err := c.startNode(n); err != nil {
			return c, err
		}
	}
	for _, n := range nodes {
		if err := awaitStartup(n, 90*time.Second); err != nil {
			return c, err
		}
	}
	for _, n := range nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", nodes[0].name}, {"start_app"}} {
			if _, err := ctl(n.name, args...); err != nil {
				return c, fmt.Errorf("join %s to %s: %v", n.name, nodes[0].name, err)
			}
		}
		if err := awaitStartup(n, 60*time.Second); err != nil {
			return c, err
		}
	}
	if err := awaitRunning(nodes[0], len(nodes), 30*time.Second); err != nil {
		return c, err
	}
	return c, nil
}

func (c *clusterRun) startNode(n *node) error {
	cmd := exec.Command("rabbitmq-server", "-detached")
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(n.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "enabled_plugins"),
	)
	// A file, not a pipe: the detached node must not hold our pipe open.
	cmd.Stdout, cmd.Stderr = c.log, c.log
	cmd.WaitDelay = 5 * time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %v\n\n%s", n.name, err, howToInstall)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("rabbitmq-server -detached for %s: %v (output in %s)", n.name, err, c.log.Name())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("rabbitmq-server -detached for %s did not return within 60s", n.name)
	}
	return nil
}

// awaitStartup waits for the node's rabbit app. await_startup fails at once
// while the node has not registered with epmd yet, so it is retried.
func awaitStartup(n *node, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("node %s did not start within %v (logs in %s)", n.name, within, filepath.Join(n.dir, "log"))
		}
		_, err := ctlWithin(min(left, 30*time.Second), n.name, "await_startup", "--timeout", "25")
		if err == nil {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// clusterStatus is the part of `cluster_status --formatter json` we read.
type clusterStatus struct {
	RunningNodes []string `json:"running_nodes"`
	DiskNodes    []string `json:"disk_nodes"`
}

func status(via *node) (clusterStatus, error) {
	var st clusterStatus
	out, err := ctlWithin(20*time.Second, via.name, "cluster_status", "--formatter", "json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &st); err != nil {
		return st, fmt.Errorf("cluster_status: %v: %s", err, out)
	}
	return st, nil
}

// awaitRunning waits until via reports want running nodes.
func awaitRunning(via *node, want int, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last clusterStatus
	var lastErr error
	for time.Now().Before(deadline) {
		last, lastErr = status(via)
		if lastErr == nil && len(last.RunningNodes) == want {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("cluster via %s: want %d running nodes, have %v (disc nodes %v) %v", via.name, want, last.RunningNodes, last.DiskNodes, lastErr)
}

// jsonPart skips anything rabbitmqctl prints before the JSON document.
func jsonPart(s string) string {
	if i := strings.IndexAny(s, "[{"); i >= 0 {
		return s[i:]
	}
	return s
}

// startWatchdog starts a process that stops the nodes when this test
// process goes away by any means (panic, timeout, kill): it waits for EOF on
// a pipe whose write end only we hold.
func (c *clusterRun) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	var script strings.Builder
	script.WriteString("cat >/dev/null\n")
	for _, n := range nodes {
		fmt.Fprintf(&script, "timeout 60 rabbitmqctl -n %s -q stop &\n", n.name)
	}
	script.WriteString("wait\n")
	cmd := exec.Command("sh", "-c", script.String())
	cmd.Stdin = r
	cmd.Stdout, cmd.Stderr = c.log, c.log
	// Its own process group: a ^C to `go test` must not kill it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start the cluster watchdog: %v", err)
	}
	r.Close()
	c.watchdog, c.wdPipe = cmd, w
	return nil
}

// stop stops every node, whatever state the run is in, and removes the
// directories. Errors are returned for the report; it always does all it
// can.
func (c *clusterRun) stop() error {
	if c == nil {
		return nil // nothing was started
	}
	var errs []error
	if c.wdPipe != nil {
		// The watchdog stops the nodes now.
		c.wdPipe.Close()
		done := make(chan error, 1)
		go func() { done <- c.watchdog.Wait() }()
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			errs = append(errs, errors.New("the watchdog did not stop the nodes within 90s"))
			_ = syscall.Kill(-c.watchdog.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	stopNodes()
	if pids := strayBeams(); len(pids) > 0 {
		errs = append(errs, fmt.Errorf("RabbitMQ processes %v of the test nodes survived rabbitmqctl stop; killed", pids))
	}
	if c.log != nil {
		c.log.Close()
	}
	if c.dir != "" && len(errs) == 0 {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
	} else if c.dir != "" {
		errs = append(errs, fmt.Errorf("node files kept in %s", c.dir))
	}
	if c.lock != nil {
		c.lock.Close()
	}
	return errors.Join(errs...)
}

// stopNodes stops the test nodes that are running (quietly: most of the time
// there are none), then kills by pid any of their Erlang VMs still alive.
func stopNodes() {
	done := make(chan struct{}, len(nodes))
	for _, n := range nodes {
		go func() {
			defer func() { done <- struct{}{} }()
			if pids := beamsOf(n.name); len(pids) == 0 {
				return
			}
			_, _ = ctlWithin(60*time.Second, n.name, "stop")
		}()
	}
	for range nodes {
		<-done
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(strayBeams()) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	for _, pid := range strayBeams() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func strayBeams() []int {
	var out []int
	for _, n := range nodes {
		out = append(out, beamsOf(n.name)...)
	}
	return out
}

// beamsOf lists the pids of Erlang VMs running the node. The node name is
// not on their command line; it comes from RABBITMQ_NODENAME, which we set
// for them alone (rabbitmqctl's own VMs are told the node with -n).
func beamsOf(nodeName string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte("RABBITMQ_NODENAME=" + nodeName + "\x00")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte("beam")) {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte("\x00"), want...)) {
			out = append(out, pid)
		}
	}
	return out
}

func portFree(port int) error {
	ln, err := listenTCP(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("port %d is in use by something else: %v", port, err)
	}
	return ln.Close()
}

func chownTree(root string, uid, gid int) error {
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// lockFile takes an exclusive flock, waiting up to within.
func lockFile(path string, within time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(within)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, fmt.Errorf("lock %s: %v", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another cluster test run holds %s for more than %v", path, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
