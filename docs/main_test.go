// Package docs tests the user's documentation: README.md and docs/*.md.
//
// Every fenced block of those files is either executed or checked, so that
// an example can never drift from the product:
//
//   - ```console blocks are shell transcripts: each "$ " line runs in bash
//     (in one shell per block, from a scratch directory that links the
//     repository's files) and what follows it, up to the next "$ ", is the
//     output it must print (stdout and stderr together; a line "..." stands
//     for any lines, "..." in a line for any text);
//   - ```memcache blocks are protocol sessions: "> " lines (or "2> " for a
//     second connection) are sent, with CR LF, and the lines after them are
//     the replies that must come back ("2< " names the connection of a reply
//     that comes after another connection's line); "..." in a reply stands
//     for any text, and {name} for a word that a later sent line repeats;
//   - ```sh blocks run in bash and must exit 0;
//   - ```yaml blocks must load as an mcbridge config (mcbridge -check-config);
//   - ```text blocks are not code (diagrams, formats) and are not run;
//   - any other block needs a mark that says how it is checked instead.
//
// A mark is an HTML comment on the line before the fence:
// <!-- doctest: WORD[=VALUE] ... --> with the words
//
//	config=PATH      run the block against a gateway started with this config
//	                 (a repository path, or "previous" for the last yaml block
//	                 of the same file)
//	excerpt=PATH     the block is an excerpt of that file (which its own tests
//	                 run): its lines must appear there in that order, together
//	make             a block of make commands: each target must be in the Makefile
//	docker           docker commands (no docker engine here): each line is
//	                 one, and the files they use exist (the compose file with
//	                 its services, the Dockerfile, mounted repository files);
//	                 cmd/mcbridge's tests check those files' content
//	rabbitmq-conf    rabbitmq.conf lines: "key = value" with keys RabbitMQ has
//
// Blocks that talk to a gateway get a real mcbridge process (built from
// ./cmd/mcbridge) of their own, against this test binary's private RabbitMQ
// node (testbroker): 127.0.0.1:11211 and 127.0.0.1:9150 in a block, and in
// its expected output, stand for that gateway's memcache and metrics
// addresses. After each block the gateway stops and the queues it used are
// deleted, so blocks do not see each other's messages.
package docs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"testing"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// binDir holds the mcbridge binary the blocks run, built once by TestMain;
// it comes first in the blocks' PATH.
var binDir string

// repoRoot is the repository's root directory (absolute).
var repoRoot string

func TestMain(m *testing.M) {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "mcbridge-docs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "mcbridge"), "./cmd/mcbridge")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build mcbridge: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := testbroker.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// docFiles are the user's documentation, repository-relative.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md"}
	for _, f := range files {
		out = append(out, strings.TrimPrefix(f, repoRoot+string(filepath.Separator)))
	}
	return out
}
