package docs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/config"
)

// blockTimeout bounds one block's commands.
const blockTimeout = 90 * time.Second

// TestDocBlocks runs or checks every code block of the documentation (see
// the package doc for how each kind is handled).
func TestDocBlocks(t *testing.T) {
	requirePackages(t, "netcat-openbsd", "curl")
	counts := map[string]int{}
	for _, file := range docFiles(t) {
		var lastYAML *block
		for _, b := range readBlocks(t, file) {
			kind := b.lang
			if len(b.mark) > 0 && b.mark["config"] == "" {
				kind = "checked"
			}
			counts[kind]++
			t.Run(strings.NewReplacer("/", "_", ".md", "").Replace(b.String()), func(t *testing.T) {
				t.Logf("%s (%s)", b, b.lang)
				runBlock(t, b, lastYAML)
			})
			if b.lang == "yaml" {
				lastYAML = &b
			}
		}
	}
	t.Logf("blocks: %v", counts)
}

func runBlock(t *testing.T, b block, lastYAML *block) {
	switch {
	case b.mark.has("excerpt"):
		checkExcerpt(t, b)
		return
	case b.mark.has("make"):
		checkMake(t, b)
		return
	case b.mark.has("docker"):
		checkDocker(t, b)
		return
	case b.mark.has("rabbitmq-conf"):
		checkRabbitmqConf(t, b)
		return
	}
	switch b.lang {
	case "text":
		return // not code: a diagram or a format
	case "yaml":
		if _, err := config.Load([]byte(b.text)); err != nil {
			t.Fatalf("%s: the config does not load: %v", b, err)
		}
		return
	case "console", "memcache", "sh":
	default:
		t.Fatalf("%s: a %q block is neither run nor checked: give it a doctest mark (see docs/main_test.go's package doc)", b, b.lang)
	}
	var g *gateway
	if usesGateway(b) {
		cfgText := ""
		switch path := b.mark["config"]; path {
		case "":
		case "previous":
			if lastYAML == nil {
				t.Fatalf("%s: config=previous, but no yaml block comes before it in %s", b, b.file)
			}
			cfgText = lastYAML.text
		default:
			data, err := os.ReadFile(filepath.Join(repoRoot, path))
			if err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			cfgText = string(data)
		}
		g = startGateway(t, cfgText)
	}
	switch b.lang {
	case "console":
		runConsole(t, b, g)
	case "sh":
		runShell(t, b, g)
	case "memcache":
		runSession(t, b, g)
	}
}

func (m mark) has(word string) bool {
	_, ok := m[word]
	return ok
}

// command is one "$ " command of a transcript and the output it must print.
type command struct {
	line int // in the Markdown file
	cmd  string
	want []string
}

var heredoc = regexp.MustCompile(`<<-?\s*['"]?([A-Za-z_]+)['"]?`)

// parseConsole splits a transcript into commands. A command goes on over
// lines ending in "\" and over the body of a heredoc.
func parseConsole(t *testing.T, b block) []command {
	t.Helper()
	var cmds []command
	lines := strings.Split(strings.TrimSuffix(b.text, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if !strings.HasPrefix(line, "$ ") {
			if len(cmds) == 0 {
				t.Fatalf("%s: a console block starts with a \"$ \" command", b)
			}
			c := &cmds[len(cmds)-1]
			c.want = append(c.want, line)
			continue
		}
		c := command{line: b.line + 1 + i, cmd: strings.TrimPrefix(line, "$ ")}
		for strings.HasSuffix(c.cmd, "\\") && i+1 < len(lines) {
			i++
			c.cmd += "\n" + lines[i]
		}
		if m := heredoc.FindStringSubmatch(c.cmd); m != nil {
			for i+1 < len(lines) {
				i++
				c.cmd += "\n" + lines[i]
				if strings.TrimSpace(lines[i]) == m[1] {
					break
				}
			}
		}
		cmds = append(cmds, c)
	}
	return cmds
}

const cmdMarker = "\x1edoctest-command\x1e"

// runConsole runs a transcript's commands in one bash and compares what
// each printed with the transcript.
func runConsole(t *testing.T, b block, g *gateway) {
	cmds := parseConsole(t, b)
	var script strings.Builder
	script.WriteString("exec 2>&1\n")
	for _, c := range cmds {
		// The marker keeps the exit status of the command before it, for
		// a transcript that shows $?.
		fmt.Fprintf(&script, "__doctest_status=$?; printf '\\n%s\\n'; (exit $__doctest_status)\n%s\n", cmdMarker, g.localize(c.cmd))
	}
	out := runBash(t, b, script.String(), nil)
	parts := strings.Split(out, "\n"+cmdMarker+"\n")
	if len(parts) != len(cmds)+1 {
		t.Fatalf("%s: the transcript's %d commands printed %d parts (did the shell stop early?):\n%s", b, len(cmds), len(parts)-1, clip(out))
	}
	for i, c := range cmds {
		got := strings.Split(strings.TrimRight(strings.ReplaceAll(parts[i+1], "\r", ""), "\n"), "\n")
		if len(got) == 1 && got[0] == "" {
			got = nil
		}
		want := make([]string, len(c.want))
		for j, w := range c.want {
			want[j] = g.localize(w)
		}
		if !matchLines(want, got) {
			t.Errorf("%s:%d: $ %s\nwant:\n%s\ngot:\n%s", b.file, c.line, c.cmd, strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
	}
}

// runShell runs a sh block, which must exit 0.
func runShell(t *testing.T, b block, g *gateway) {
	runBash(t, b, "set -e\n"+g.localize(b.text), nil)
}

// runBash runs script in bash from a scratch directory that links every
// top-level entry of the repository (so examples/… paths work and files the
// block writes stay out of the repository), with Debian's tools first in
// PATH after mcbridge. A shell that does not exit 0 fails the test, for sh
// blocks; transcripts are judged by their output. Background jobs are
// killed with the shell's process group.
func runBash(t *testing.T, b block, script string, env []string) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := os.Symlink(filepath.Join(repoRoot, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	path := binDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if goCmd, err := exec.LookPath("go"); err == nil {
		path += ":" + filepath.Dir(goCmd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), blockTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+path, "LC_ALL=C.UTF-8")
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	// Whatever the block left running in the background goes too.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if ctx.Err() != nil {
		t.Fatalf("%s: still running after %v:\n%s", b, blockTimeout, clip(out.String()))
	}
	if err != nil && b.lang == "sh" {
		t.Fatalf("%s: %v\n%s", b, err, clip(out.String()))
	}
	return out.String()
}

// matchLines compares output lines with a transcript's: a line "..." stands
// for any number of lines, and "..." inside a line for any text.
func matchLines(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if want[0] == "..." {
		for i := 0; i <= len(got); i++ {
			if matchLines(want[1:], got[i:]) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && matchLine(want[0], got[0]) && matchLines(want[1:], got[1:])
}

func matchLine(want, got string) bool {
	want, got = strings.TrimRight(want, " \t"), strings.TrimRight(got, " \t")
	if !strings.Contains(want, "...") {
		return want == got
	}
	return regexp.MustCompile("^" + wildcards(want) + "$").MatchString(got)
}

// placeholder is a {name} in a session: in a reply it matches one word and
// remembers it, in a line sent later it stands for that word (a
// reservation id from gets, sent back with cas).
var placeholder = regexp.MustCompile(`\{[a-z]+\}`)

// matchCapture is matchLine with placeholders.
func matchCapture(want, got string, vars map[string]string) bool {
	if !placeholder.MatchString(want) {
		return matchLine(want, got)
	}
	var names []string
	var re strings.Builder
	re.WriteString("^")
	rest := want
	idx := placeholder.FindAllStringIndex(want, -1)
	prev := 0
	for _, loc := range idx {
		re.WriteString(wildcards(rest[prev:loc[0]]))
		names = append(names, want[loc[0]+1:loc[1]-1])
		re.WriteString(`(\S+)`)
		prev = loc[1]
	}
	re.WriteString(wildcards(rest[prev:]) + "$")
	m := regexp.MustCompile(re.String()).FindStringSubmatch(strings.TrimRight(got, " \t"))
	if m == nil {
		return false
	}
	for i, n := range names {
		vars[n] = m[i+1]
	}
	return true
}

// wildcards quotes s for a regexp, with "..." matching any text.
func wildcards(s string) string {
	parts := strings.Split(s, "...")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return strings.Join(parts, ".*")
}

// step of a protocol session: a line sent on a connection, or a reply line
// expected on one.
type step struct {
	line int
	conn string
	send bool
	text string
}

var sessionLine = regexp.MustCompile(`^(\d*)(>|<) ?(.*)$`)

func parseSession(b block) []step {
	var steps []step
	conn := "1"
	for i, line := range strings.Split(strings.TrimSuffix(b.text, "\n"), "\n") {
		s := step{line: b.line + 1 + i, conn: conn, text: line}
		if m := sessionLine.FindStringSubmatch(line); m != nil {
			s.conn, s.send, s.text = m[1], m[2] == ">", m[3]
			if s.conn == "" {
				s.conn = "1"
			}
			if s.send {
				conn = s.conn
			}
		}
		steps = append(steps, s)
	}
	return steps
}

type sessionConn struct {
	c       net.Conn
	r       *bufio.Reader
	pending []step
	quit    bool
}

// runSession plays a memcache session against the gateway: each sent line
// goes out with CR LF once the replies expected before it have come back.
// At the end every connection still open answers a "version" at once,
// which shows that it sent nothing more than the session says.
func runSession(t *testing.T, b block, g *gateway) {
	conns := map[string]*sessionConn{}
	vars := map[string]string{}
	var order []string
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	flush := func() {
		for _, name := range order {
			c := conns[name]
			for _, want := range c.pending {
				_ = c.c.SetReadDeadline(time.Now().Add(15 * time.Second))
				got, err := c.r.ReadString('\n')
				if err != nil {
					t.Fatalf("%s:%d: connection %s: want %q, got %q and %v", b.file, want.line, name, want.text, got, err)
				}
				got = strings.TrimSuffix(strings.TrimSuffix(got, "\n"), "\r")
				if !matchCapture(g.localize(want.text), got, vars) {
					t.Fatalf("%s:%d: connection %s: want %q, got %q", b.file, want.line, name, want.text, got)
				}
			}
			c.pending = nil
		}
	}
	for _, s := range parseSession(b) {
		c := conns[s.conn]
		if c == nil {
			nc, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c = &sessionConn{c: nc, r: bufio.NewReader(nc)}
			conns[s.conn] = c
			order = append(order, s.conn)
		}
		if !s.send {
			c.pending = append(c.pending, s)
			continue
		}
		flush()
		text := placeholder.ReplaceAllStringFunc(s.text, func(p string) string {
			v, ok := vars[p[1:len(p)-1]]
			if !ok {
				t.Fatalf("%s:%d: %s is sent before a reply gave it a value", b.file, s.line, p)
			}
			return v
		})
		if _, err := c.c.Write([]byte(text + "\r\n")); err != nil {
			t.Fatalf("%s:%d: send: %v", b.file, s.line, err)
		}
		c.quit = s.text == "quit"
	}
	flush()
	for _, name := range order {
		c := conns[name]
		_ = c.c.SetDeadline(time.Now().Add(15 * time.Second))
		if c.quit {
			if extra, err := c.r.ReadString('\n'); err == nil {
				t.Errorf("%s: connection %s: after quit it sent %q", b, name, extra)
			}
			continue
		}
		_, _ = c.c.Write([]byte("version\r\n"))
		if got, err := c.r.ReadString('\n'); err != nil || !strings.HasPrefix(got, "VERSION ") {
			t.Errorf("%s: connection %s: after the session it sent %q (%v), which the session does not show", b, name, got, err)
		}
	}
}

// requirePackages fails the test, saying what to install, unless every
// Debian package is installed.
func requirePackages(t *testing.T, pkgs ...string) {
	t.Helper()
	var missing []string
	for _, p := range pkgs {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", p).Output()
		if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), " installed") {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the documentation's examples need: apt-get install %s   (make test installs them)", strings.Join(missing, " "))
	}
}
