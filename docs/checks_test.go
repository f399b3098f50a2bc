package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// checkExcerpt: the block's lines appear in the file it names, in order and
// together (leading and trailing spaces aside; a line "..." in the block
// stands for lines left out).
func checkExcerpt(t *testing.T, b block) {
	path := b.mark["excerpt"]
	data, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatalf("%s: excerpt of %s: %v", b, path, err)
	}
	want := trimmedLines(b.text)
	got := trimmedLines(string(data))
	for i := range got {
		if matchPrefix(want, got[i:]) {
			return
		}
	}
	t.Errorf("%s: this block is not an excerpt of %s (any more): update it from the file", b, path)
}

func trimmedLines(s string) []string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// matchPrefix: want matches the first lines of got.
func matchPrefix(want, got []string) bool {
	if len(want) == 0 {
		return true
	}
	if want[0] == "..." {
		for i := 0; i <= len(got); i++ {
			if matchPrefix(want[1:], got[i:]) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && want[0] == got[0] && matchPrefix(want[1:], got[1:])
}

// checkMake: a block of make commands (which set up a machine, or run this
// very test) is not run; each target it names must be in the Makefile.
func checkMake(t *testing.T, b block) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.SplitSeq(b.text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		n++
		if f[0] != "make" || len(f) < 2 {
			t.Errorf("%s: %q is not a make command, so the make mark does not cover it", b, line)
			continue
		}
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(f[1]) + `:`).Match(data) {
			t.Errorf("%s: the Makefile has no target %q", b, f[1])
		}
	}
	if n == 0 {
		t.Errorf("%s: no make command in a block marked make", b)
	}
}

// checkDocker: a block of docker commands cannot run here (no docker
// engine; cmd/mcbridge's tests check the compose file and the Dockerfile
// themselves). Each line must be a docker command, and the files it uses
// must exist: the compose file (with services that have an image or a
// build) and the Dockerfile.
func checkDocker(t *testing.T, b block) {
	n := 0
	for line := range strings.SplitSeq(b.text, "\n") {
		line, _, _ = strings.Cut(line, " #")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		n++
		if f[0] != "docker" {
			t.Errorf("%s: %q is not a docker command, so the docker mark does not cover it", b, line)
			continue
		}
		compose := "docker-compose.yml"
		for i, w := range f {
			if w == "-f" && i+1 < len(f) {
				compose = f[i+1]
			}
		}
		switch {
		case len(f) > 1 && f[1] == "compose":
			checkComposeFile(t, b, compose)
		case len(f) > 1 && f[1] == "build":
			if _, err := os.Stat(filepath.Join(repoRoot, "Dockerfile")); err != nil {
				t.Errorf("%s: %v", b, err)
			}
		}
		for _, w := range f {
			// Bind mounts of repository files ($PWD/deploy/…) must exist.
			if rest, ok := strings.CutPrefix(w, "$PWD/"); ok {
				host, _, _ := strings.Cut(rest, ":")
				if _, err := os.Stat(filepath.Join(repoRoot, host)); err != nil {
					t.Errorf("%s: mounts %s: %v", b, host, err)
				}
			}
		}
	}
	if n == 0 {
		t.Errorf("%s: no docker command in a block marked docker", b)
	}
}

func checkComposeFile(t *testing.T, b block, file string) {
	data, err := os.ReadFile(filepath.Join(repoRoot, file))
	if err != nil {
		t.Errorf("%s: %v", b, err)
		return
	}
	var compose struct {
		Services map[string]struct {
			Image string `yaml:"image"`
			Build any    `yaml:"build"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Errorf("%s: %s: %v", b, file, err)
		return
	}
	if len(compose.Services) == 0 {
		t.Errorf("%s: %s has no services", b, file)
	}
	for name, s := range compose.Services {
		if s.Image == "" && s.Build == nil {
			t.Errorf("%s: %s: service %s has neither image nor build", b, file, name)
		}
	}
}

// rabbitmqConfKeys are the rabbitmq.conf settings the docs may recommend,
// each one RabbitMQ 3.10 and later knows (rabbitmq.com/docs/configure).
var rabbitmqConfKeys = map[string]bool{
	"consumer_timeout":                  true,
	"queue_leader_locator":              true,
	"max_message_size":                  true,
	"vm_memory_high_watermark.relative": true,
	"disk_free_limit.absolute":          true,
	"heartbeat":                         true,
}

// checkRabbitmqConf: rabbitmq.conf lines (the broker's settings, which a
// test cannot change on a broker it does not own) are "key = value" with a
// known key.
func checkRabbitmqConf(t *testing.T, b block) {
	n := 0
	for line := range strings.SplitSeq(b.text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n++
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok || k == "" || v == "":
			t.Errorf("%s: %q is not a rabbitmq.conf line (key = value)", b, line)
		case !rabbitmqConfKeys[k]:
			t.Errorf("%s: %q is not a rabbitmq.conf key these docs know", b, k)
		}
	}
	if n == 0 {
		t.Errorf("%s: no setting in a block marked rabbitmq-conf", b)
	}
}
