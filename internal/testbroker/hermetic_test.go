package testbroker_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// defaultBroker matches the machine's broker as a test would spell it.
var defaultBroker = regexp.MustCompile(`(127\.0\.0\.1|localhost|\[::1\]|0\.0\.0\.0):5672\b`)

// hermeticAllowed are the files whose strings may name the machine's
// broker, and why.
var hermeticAllowed = map[string]string{
	"config/config_test.go":                  "checks the default URL and its redaction; dials nothing",
	"config/settings_test.go":                "prints redacted URLs; dials nothing",
	"internal/testbroker/testbroker_test.go": "checks that MustBePrivate refuses these URLs; dials nothing",
}

// No test, and nothing in internal/ (the tests' own machinery), names the
// machine's broker in a string: tests run against their private node
// (testbroker.URL). Comments may mention it. What a string cannot show (a
// config default that is dialed) testbroker.MustBePrivate refuses where test
// gateways and clients start, and scripts/test.sh's tripwire on port 5672
// catches on a machine without a broker there.
func TestNoTestNamesTheMachinesBroker(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repo root not found at %s: %v", root, err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || !strings.HasSuffix(rel, "_test.go") && !strings.HasPrefix(rel, "internal/") {
			return nil
		}
		if _, ok := hermeticAllowed[rel]; ok {
			return nil
		}
		checked++
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if m := defaultBroker.FindString(lit.Value); m != "" {
					t.Errorf("%s:%d: names the machine's broker (%s): use testbroker.URL or testbroker.Addr",
						rel, fset.Position(lit.Pos()).Line, m)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files under %s: is the walk broken?", checked, root)
	}
	t.Logf("checked %d files", checked)
}
