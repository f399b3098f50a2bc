package docs

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// block is one fenced code block of a Markdown file.
type block struct {
	file string // repository-relative
	line int    // of the opening fence
	lang string // the info string's first word
	text string // the content, without the fences
	mark mark   // from a <!-- doctest: … --> comment on the line before
}

func (b block) String() string { return b.file + ":" + strconv.Itoa(b.line) }

// mark is the words of a doctest comment: "config" → "examples/x.yml",
// "make" → "".
type mark map[string]string

var (
	fence     = regexp.MustCompile("^(```+|~~~+)\\s*([^\\s`]*)")
	markRegex = regexp.MustCompile(`^<!--\s*doctest:\s*(.*?)\s*-->\s*$`)
)

// knownMarks are the words a mark may use (see the package doc).
var knownMarks = map[string]bool{
	"config": true, "excerpt": true, "make": true, "docker": true, "rabbitmq-conf": true,
}

// readBlocks returns the fenced blocks of a Markdown file. A doctest
// comment not followed by a fence, or with an unknown word, fails the test.
func readBlocks(t *testing.T, file string) []block {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks  []block
		cur     *block
		body    []string
		close   string
		pending mark
		markAt  int
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if cur != nil {
			if strings.HasPrefix(strings.TrimSpace(line), close) && strings.Trim(strings.TrimSpace(line), close[:1]) == "" {
				cur.text = strings.Join(body, "\n")
				if len(body) > 0 {
					cur.text += "\n"
				}
				blocks = append(blocks, *cur)
				cur, body = nil, nil
				continue
			}
			body = append(body, line)
			continue
		}
		if m := fence.FindStringSubmatch(line); m != nil {
			cur = &block{file: file, line: n, lang: m[2], mark: pending}
			close = m[1]
			pending = nil
			continue
		}
		if pending != nil {
			t.Errorf("%s:%d: doctest mark not followed by a code block", file, markAt)
			pending = nil
		}
		if m := markRegex.FindStringSubmatch(line); m != nil {
			pending, markAt = mark{}, n
			for _, w := range strings.Fields(m[1]) {
				k, v, _ := strings.Cut(w, "=")
				if !knownMarks[k] {
					t.Errorf("%s:%d: unknown doctest mark %q", file, n, k)
				}
				pending[k] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Errorf("%s:%d: code block never closed", file, cur.line)
	}
	return blocks
}
