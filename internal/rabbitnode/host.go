package rabbitnode

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Host is the private world of one test process's nodes: their directory,
// Erlang cookie and epmd port, and the watchdog that ends them if the
// process dies. Make one with NewHost and always Close it.
type Host struct {
	// Dir holds the cookie, the watchdog's log and one directory per node.
	Dir string

	prefix   string // node names start with it
	suffix   string // random, ends every node name of this host
	epmdPort int
	scripts  scripts

	watchdog *exec.Cmd
	wdPipe   *os.File // closing it (or dying) makes the watchdog end the nodes

	mu     sync.Mutex
	nodes  []*Node
	ports  map[int]bool // handed out to this host's nodes
	closed bool
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// NewHost prepares a host whose nodes are named <prefix>-<short>-<random>
// @localhost. It first reaps what hosts of dead test processes left behind.
// It fails at once, saying how to install it, when RabbitMQ is missing.
func NewHost(prefix string) (*Host, error) {
	sc, err := findScripts()
	if err != nil {
		return nil, err
	}
	reapOrphans()

	var b [3]byte
	_, _ = rand.Read(b[:])
	h := &Host{
		prefix:  unsafeName.ReplaceAllString(prefix, "_"),
		suffix:  hex.EncodeToString(b[:]),
		scripts: sc,
		ports:   map[int]bool{},
	}
	if h.Dir, err = os.MkdirTemp("", dirPrefix+h.prefix+"-"); err != nil {
		return nil, fmt.Errorf("rabbitnode: %w", err)
	}
	if err := h.setUp(); err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("rabbitnode: set up %s: %w", h.Dir, err)
	}
	return h, nil
}

func (h *Host) setUp() error {
	if err := writeOwner(h.Dir); err != nil {
		return err
	}
	// The node and the CLI find the cookie in $HOME, which is h.Dir for
	// both; only this user may read it, or Erlang refuses it.
	var c [20]byte
	_, _ = rand.Read(c[:])
	if err := os.WriteFile(filepath.Join(h.Dir, ".erlang.cookie"), []byte(strings.ToUpper(hex.EncodeToString(c[:]))), 0o400); err != nil {
		return err
	}
	// An empty rabbitmq-env.conf: the machine's (/etc/rabbitmq), which may
	// name the default node or set Erlang flags, is not read.
	if err := os.WriteFile(h.envConf(), nil, 0o644); err != nil {
		return err
	}
	var err error
	if h.epmdPort, err = freePort(h.ports); err != nil {
		return err
	}
	return h.startWatchdog()
}

func (h *Host) envConf() string { return filepath.Join(h.Dir, "rabbitmq-env.conf") }

// baseEnv is the environment of every process of the host: the test
// process's own, less anything that would point RabbitMQ or Erlang
// elsewhere, plus the host's home (cookie), epmd and marker.
func (h *Host) baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RABBITMQ_") || strings.HasPrefix(k, "ERL_") ||
			k == "HOME" || k == "NOTIFY_SOCKET" || k == markerVar {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+h.Dir,
		markerVar+"="+h.Dir,
		"ERL_EPMD_PORT="+strconv.Itoa(h.epmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_CONF_ENV_FILE="+h.envConf(),
	)
}

// watchdogScript waits for EOF on its stdin, whose write end only the test
// process holds: EOF comes when the test process closes it (Close) or
// dies by any means. Then it ends every process of the host, gently first,
// and removes the host's directory. After a normal Close the directory is
// gone already and it has nothing to do.
const watchdogScript = `dir=$1
cat >/dev/null
[ -d "$dir" ] || exit 0
echo "rabbitmq nodes of $dir: the test process is gone; stopping them"
pids() { grep -lzxF -- "` + markerVar + `=$dir" /proc/[0-9]*/environ 2>/dev/null | sed 's|^/proc/\([0-9]*\)/environ$|\1|'; }
p=$(pids)
[ -z "$p" ] || kill -CONT $p 2>/dev/null
[ -z "$p" ] || kill -TERM $p 2>/dev/null
i=0
while [ -n "$(pids)" ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done
p=$(pids)
[ -z "$p" ] || { echo "killing $p"; kill -KILL $p 2>/dev/null; }
rm -rf "$dir"
`

func (h *Host) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(h.Dir, "watchdog.log"))
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	defer logf.Close()
	cmd := exec.Command("sh", "-c", watchdogScript, "rabbitnode-watchdog", h.Dir)
	cmd.Stdin = r
	cmd.Stdout, cmd.Stderr = logf, logf
	// Not h.baseEnv(): the watchdog must not match its own search.
	// Its own process group: a ^C to `go test` must not stop it before the
	// test process it watches.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start the watchdog: %w", err)
	}
	r.Close()
	h.watchdog, h.wdPipe = cmd, w
	return nil
}

// NewNode prepares a node named <prefix>-<short>-<random>@localhost on free
// ports, with its directory and config; Start starts it.
func (h *Host) NewNode(short string) (*Node, error) {
	short = unsafeName.ReplaceAllString(short, "_")
	n := &Node{
		Name:  fmt.Sprintf("%s-%s-%s@localhost", h.prefix, short, h.suffix),
		Short: short,
		Dir:   filepath.Join(h.Dir, short),
		host:  h,
	}
	h.mu.Lock()
	closed := h.closed
	dup := slices.ContainsFunc(h.nodes, func(o *Node) bool { return o.Name == n.Name })
	h.mu.Unlock()
	switch {
	case closed:
		return nil, errors.New("rabbitnode: host is closed")
	case dup:
		return nil, fmt.Errorf("rabbitnode: node %s exists already", n.Name)
	}
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("rabbitnode: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
		return nil, fmt.Errorf("rabbitnode: %w", err)
	}
	if err := n.pickPorts(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("rabbitnode: host is closed")
	}
	h.nodes = append(h.nodes, n)
	return n, nil
}

// Close stops every node (gracefully, within a minute each), ends any
// other process of the host (epmd, a hung rabbitmqctl), removes the
// directory and stops the watchdog. It always does all it can and returns
// what went wrong.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	nodes := h.nodes
	h.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	nodeErrs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() { nodeErrs[i] = n.Stop() })
	}
	wg.Wait()
	errs = append(errs, nodeErrs...)
	// epmd and anything else of ours that is still there.
	if killed := endProcs(func(m marked) bool { return m.host == h.Dir }, 5*time.Second); len(killed) > 0 {
		errs = append(errs, fmt.Errorf("processes %v of %s ignored SIGTERM; killed", killed, h.Dir))
	}
	if err := os.RemoveAll(h.Dir); err != nil {
		errs = append(errs, err)
	}
	if h.wdPipe != nil {
		h.wdPipe.Close()
		done := make(chan error, 1)
		go func() { done <- h.watchdog.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("watchdog: %w", err))
			}
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-h.watchdog.Process.Pid, syscall.SIGKILL)
			<-done
			errs = append(errs, errors.New("the watchdog did not exit within 60s"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rabbitnode: close %s: %w", h.Dir, err)
	}
	return nil
}
