package rabbitnode

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// markerVar is set, to the host's directory, in the environment of every
// process a host starts; the processes those start (the Erlang VM, epmd)
// inherit it.
const markerVar = "MCBRIDGE_RABBITNODE_HOST"

// dirPattern names host directories under os.TempDir.
const dirPrefix = "mcbridge-rabbitnode-"

// ownerFile, in a host's directory, identifies the test process that owns
// it: "<pid> <start time in clock ticks since boot>".
const ownerFile = "owner"

// marked is a live process that carries markerVar.
type marked struct {
	pid  int
	host string // markerVar's value
	node string // RABBITMQ_NODENAME, if set
	comm string // the program's name, e.g. beam.smp
}

// markedProcs lists the live processes that carry markerVar. Processes it
// may not read (other users' when not root) are skipped: a host only
// starts processes as its own user.
func markedProcs() []marked {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []marked
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte(markerVar+"=")) {
			continue
		}
		if !sameRoot(pid) {
			// Another root (a chroot or container on this kernel): its
			// hosts' directories and owners are not ours to judge, and
			// reaping them killed the nodes of a test run there.
			continue
		}
		m := marked{pid: pid}
		for _, kv := range bytes.Split(env, []byte{0}) {
			k, v, _ := strings.Cut(string(kv), "=")
			switch k {
			case markerVar:
				m.host = v
			case "RABBITMQ_NODENAME":
				m.node = v
			}
		}
		if m.host == "" {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		m.comm = strings.TrimSpace(string(comm))
		out = append(out, m)
	}
	return out
}

// sameRoot reports whether process pid sees the file system from the same
// root directory as this process. When that cannot be told (no permission,
// the process is gone) it is false: what cannot be identified is left alone.
func sameRoot(pid int) bool {
	ours, err := os.Stat("/proc/self/root")
	if err != nil {
		return false
	}
	theirs, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid), "root"))
	return err == nil && os.SameFile(ours, theirs)
}

// pidsWhere lists the marked processes for which keep is true.
func pidsWhere(keep func(marked) bool) []int {
	var pids []int
	for _, m := range markedProcs() {
		if keep(m) {
			pids = append(pids, m.pid)
		}
	}
	return pids
}

// endProcs sends SIGTERM to the processes that match, waits up to grace
// for them to go, then sends SIGKILL to those left and waits for them too.
// It returns the pids that needed SIGKILL.
func endProcs(match func(marked) bool, grace time.Duration) (killed []int) {
	for _, pid := range pidsWhere(match) {
		_ = syscall.Kill(pid, syscall.SIGCONT) // a frozen VM cannot act on SIGTERM
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if waitGone(match, grace) {
		return nil
	}
	killed = pidsWhere(match)
	for _, pid := range killed {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	waitGone(match, 10*time.Second)
	return killed
}

// waitGone polls until no marked process matches, for at most within.
func waitGone(match func(marked) bool, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for {
		if len(pidsWhere(match)) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startTime is the start time of process pid, in clock ticks since boot
// (field 22 of /proc/<pid>/stat): with the pid, it names one process even
// after the pid is reused.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func writeOwner(dir string) error {
	st, err := startTime(os.Getpid())
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %d\n", os.Getpid(), st), 0o644)
}

// ownerAlive reports whether the test process that owns the host directory
// dir still runs. A directory without an owner file is being set up if it
// is young, and abandoned if not.
func ownerAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		st, err := os.Stat(dir)
		return err == nil && time.Since(st.ModTime()) < time.Minute
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &start); err != nil {
		return false
	}
	now, err := startTime(pid)
	return err == nil && now == start
}

// reapOrphans ends the processes and removes the directories of hosts
// whose test process is gone: normally their watchdog did it, but the
// watchdog may have been killed along with the test process (a kill of the
// whole process tree, the OOM killer). Hosts of live test processes, this
// one's included, are left alone.
func reapOrphans() (reaped []string) {
	dead := map[string]bool{}
	for _, m := range markedProcs() {
		if _, seen := dead[m.host]; !seen {
			dead[m.host] = strings.HasPrefix(filepath.Base(m.host), dirPrefix) && !ownerAlive(m.host)
		}
	}
	if len(dead) > 0 {
		endProcs(func(m marked) bool { return dead[m.host] }, 10*time.Second)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		if !ownerAlive(d) {
			dead[d] = true
		}
	}
	for d, isDead := range dead {
		if isDead {
			if err := os.RemoveAll(d); err == nil {
				reaped = append(reaped, d)
			}
		}
	}
	return reaped
}
