package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/mcbridge/mcbridge/internal/rabbitnode"
)

// ctlFunc runs a RabbitMQ CLI tool (prog is "rabbitmqctl" or
// "rabbitmq-diagnostics") with args against the benchmarked broker and
// returns its output.
type ctlFunc func(prog string, args ...string) (string, error)

// localCtl addresses the machine's default node, as `rabbitmqctl` does when
// run by hand (it needs the node's Erlang cookie: run mcbench as root or as
// the rabbitmq user).
func localCtl(prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, prog, append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// nodeCtl addresses a node started by mcbench itself (or by a test).
func nodeCtl(n *rabbitnode.Node) ctlFunc {
	return func(prog string, args ...string) (string, error) {
		if prog == "rabbitmq-diagnostics" {
			return n.Diagnostics(args...)
		}
		return n.Ctl(args...)
	}
}

// startPrivateBroker starts a RabbitMQ node of mcbench's own, on a free
// port, with the file-descriptor limit of this process: the machine's
// broker may have been started with a soft limit of 1024, which refuses
// connections long before 1,000 raw clients are connected. stop stops the
// node and removes its directory.
func startPrivateBroker() (url string, ctl ctlFunc, stop func(), err error) {
	host, err := rabbitnode.NewHost("mcbench")
	if err != nil {
		return "", nil, nil, err
	}
	n, err := host.NewNode("bench")
	if err == nil {
		err = n.Start()
	}
	if err != nil {
		if cerr := host.Close(); cerr != nil {
			fmt.Fprintln(os.Stderr, "mcbench:", cerr)
		}
		return "", nil, nil, err
	}
	return n.URL(), nodeCtl(n), func() {
		if err := host.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "mcbench:", err)
		}
	}, nil
}

// brokerStats reads the broker's memory, connections and CPU through its
// CLI. A nil *brokerStats (no CLI, a remote broker) reads nothing.
type brokerStats struct {
	ctl ctlFunc
	pid int // the broker's OS process on this machine; 0 if unknown
}

// newBrokerStats checks that the CLI reaches the broker; when it does not,
// the run goes on without broker figures and says why once.
func newBrokerStats(ctl ctlFunc) *brokerStats {
	if ctl == nil {
		return nil
	}
	b := &brokerStats{ctl: ctl}
	s, err := b.snapshot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcbench: no broker figures (memory, connections, CPU): %v\n", err)
		return nil
	}
	if _, err := procCPU(s.pid); err == nil {
		b.pid = s.pid // a broker on this machine: its CPU can be read
	}
	return b
}

// brokerSnapshot is the broker at one moment: the memory its connections
// hold (their reader, writer and channel processes and the rest of each,
// from its memory breakdown), its resident memory (from /proc: the
// breakdown's total counts allocator reserves that are not resident), the
// names its clients gave their AMQP connections, and its OS pid.
type brokerSnapshot struct {
	rss, conn int64
	names     []string
	pid       int
}

// snapshotEval prints the memory breakdown, every connection's name and
// the node's OS pid in one CLI run: each run of the CLI starts an Erlang
// VM, which takes seconds on a loaded machine.
const snapshotEval = `[io:format("mem ~s ~p~n", [K, V]) || {K, V} <- rabbit_vm:memory(), is_integer(V)],
[io:format("conn ~s~n", [proplists:get_value(<<"connection_name">>,
	[{K, V} || {K, _, V} <- proplists:get_value(client_properties, I)], <<"-">>)])
	|| I <- rabbit_networking:connection_info_all([client_properties])],
io:format("pid ~s~n", [os:getpid()]).`

func (b *brokerStats) snapshot() (brokerSnapshot, error) {
	var s brokerSnapshot
	if b == nil {
		return s, nil
	}
	out, err := b.ctl("rabbitmqctl", "eval", snapshotEval)
	if err != nil {
		return s, err
	}
	mem := false
	for _, line := range strings.Split(out, "\n") {
		kind, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch kind {
		case "mem":
			name, v, _ := strings.Cut(rest, " ")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return s, fmt.Errorf("broker memory: %q: %w", line, err)
			}
			if strings.HasPrefix(name, "connection_") {
				s.conn += n
			}
			mem = true
		case "conn":
			s.names = append(s.names, rest)
		case "pid":
			s.pid, _ = strconv.Atoi(rest)
		}
	}
	if !mem {
		return s, fmt.Errorf("no memory breakdown from the broker in %q", out)
	}
	if b.pid != 0 {
		if s.rss, _, err = procRSS(b.pid); err != nil {
			return s, err
		}
	}
	return s, nil
}

// connections counts the connections whose name starts with prefix.
func (s brokerSnapshot) connections(prefix string) int {
	n := 0
	for _, name := range s.names {
		if strings.HasPrefix(name, prefix) {
			n++
		}
	}
	return n
}

// procCPU is the CPU time process pid has used so far, from /proc (Linux):
// the sum of its threads' run time in nanoseconds where the kernel keeps
// it (schedstat), else user+system time in clock ticks. Ticks are 10ms: a
// short run's CPU could read as 0 or as one tick, which made the per
// operation figure missing or 250µs at random (a CI run's sweep lost a row
// to it). A thread that exited takes its time with it; Go's and the Erlang
// VM's threads live as long as the process.
func procCPU(pid int) (time.Duration, error) {
	if d, err := schedCPU(pid); err == nil {
		return d, nil
	}
	return statCPU(pid)
}

func schedCPU(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread ended since the listing
		}
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: %q", pid, t.Name(), b)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: %w", pid, t.Name(), err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

func statCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis, where field 3 (state) is the first.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(utime+stime) * (time.Second / 100), nil
}

// procRSS is the resident memory of process pid now and at its peak
// (VmRSS and VmHWM), in bytes.
func procRSS(pid int) (now, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, line, err)
		}
		if k == "VmRSS" {
			now = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return now, peak, nil
}
