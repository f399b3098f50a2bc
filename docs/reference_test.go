package docs

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mcbridge/mcbridge/config"
)

// configRow is a row of configuration.md's key table.
type configRow struct {
	line    int
	key     string // queues[].bindings[].routing_key
	def     string // the default cell as written
	refused string // the refused cell as written
}

var (
	tableRow  = regexp.MustCompile("^\\| `([a-z_.\\[\\]]+)` \\| (.*) \\| (.*) \\| (.*) \\|$")
	codeValue = regexp.MustCompile("^`([^`]*)`$")
)

// proseDefaults are keys whose default depends on other settings, and so
// is said in words rather than as a value.
var proseDefaults = map[string]bool{
	"queues[].bindings[].routing_key": true, // depends on the exchange's type
}

func configRows(t *testing.T) []configRow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []configRow
	for i, line := range strings.Split(string(data), "\n") {
		if m := tableRow.FindStringSubmatch(line); m != nil {
			rows = append(rows, configRow{line: i + 1, key: m[1], def: m[2], refused: m[4]})
		}
	}
	return rows
}

// schemaKeys lists every leaf key of config.Config from its yaml tags, the
// way the loader reads them: list items as "[]".
func schemaKeys() []string {
	unmarshaler := reflect.TypeFor[yaml.Unmarshaler]()
	var keys []string
	var visit func(t reflect.Type, prefix string)
	visit = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			ft, path := f.Type, prefix+name
			leaf := func(t reflect.Type) bool {
				return reflect.PointerTo(t).Implements(unmarshaler) || t.Kind() != reflect.Struct && t.Kind() != reflect.Slice
			}
			switch {
			case leaf(ft):
				keys = append(keys, path)
			case ft.Kind() == reflect.Slice && leaf(ft.Elem()):
				keys = append(keys, path)
			case ft.Kind() == reflect.Slice:
				visit(ft.Elem(), path+"[].")
			default:
				visit(ft, path+".")
			}
		}
	}
	visit(reflect.TypeFor[config.Config](), "")
	return keys
}

// TestConfigReference checks configuration.md's key table against the
// config package: the same keys, each documented default loads to the real
// default, and each refused value is refused, naming the key.
func TestConfigReference(t *testing.T) {
	rows := configRows(t)
	var documented []string
	for _, r := range rows {
		documented = append(documented, r.key)
	}
	schema := schemaKeys()
	for _, k := range schema {
		if !slices.Contains(documented, k) {
			t.Errorf("configuration.md does not document the key %s", k)
		}
	}
	for _, r := range rows {
		if !slices.Contains(schema, r.key) {
			t.Errorf("configuration.md:%d documents %s, which mcbridge does not have", r.line, r.key)
		}
		if n := countOf(documented, r.key); n > 1 {
			t.Errorf("configuration.md:%d: %s is documented twice", r.line, r.key)
		}
	}
	if len(rows) < 40 {
		t.Fatalf("found only %d rows in configuration.md's key table: did its format change?", len(rows))
	}
	for _, r := range rows {
		t.Run(r.key, func(t *testing.T) {
			checkDefault(t, r)
			checkRefused(t, r)
		})
	}
}

func checkDefault(t *testing.T, r configRow) {
	switch {
	case r.def == "required":
		if _, err := config.Load([]byte(configWith(r.key, "", false))); err == nil {
			t.Errorf("configuration.md:%d: %s is documented as required, but a config without it loads", r.line, r.key)
		}
	case strings.HasPrefix(r.def, "from `"):
		from := strings.TrimSuffix(strings.TrimPrefix(r.def, "from `"), "`")
		name := settingName(r.key)
		without := settingsOf(t, r.key, "", false)
		all := config.Default().Settings()
		var want string
		for _, s := range all {
			if s.Name == from {
				want = s.Value
			}
		}
		if got := without[name]; got != want || want == "" {
			t.Errorf("configuration.md:%d: %s defaults to %s (%q), but left out it is %q", r.line, r.key, from, want, got)
		}
	case proseDefaults[r.key]:
	default:
		m := codeValue.FindStringSubmatch(r.def)
		if m == nil {
			t.Fatalf("configuration.md:%d: the default of %s is neither a `value`, required, nor from `key`: %s", r.line, r.key, r.def)
		}
		with := settingsOf(t, r.key, m[1], true)
		without := settingsOf(t, r.key, "", false)
		name := settingName(r.key)
		if with[name] != without[name] {
			t.Errorf("configuration.md:%d: %s: the documented default %s loads as %q, but the real default is %q", r.line, r.key, m[1], with[name], without[name])
		}
	}
}

func checkRefused(t *testing.T, r configRow) {
	if r.refused == "—" {
		return
	}
	m := codeValue.FindStringSubmatch(r.refused)
	if m == nil {
		t.Fatalf("configuration.md:%d: the refused value of %s is neither a `value` nor —: %s", r.line, r.key, r.refused)
	}
	text := configWith(r.key, m[1], true)
	_, err := config.Load([]byte(text))
	leaf := r.key[strings.LastIndexAny(r.key, ".]")+1:]
	section := r.key[:max(strings.LastIndex(r.key, "."), 0)]
	switch {
	case err == nil:
		t.Errorf("configuration.md:%d: %s: %s is documented as refused, but it loads:\n%s", r.line, r.key, m[1], text)
	case !strings.Contains(err.Error(), leaf) && !strings.Contains(err.Error(), section+" "):
		t.Errorf("configuration.md:%d: %s: %s is refused with %q, which does not name the key", r.line, r.key, m[1], err)
	}
}

// settingsOf loads a config with key set to value (or left out), and
// returns its stats settings.
func settingsOf(t *testing.T, key, value string, set bool) map[string]string {
	t.Helper()
	text := configWith(key, value, set)
	c, err := config.Load([]byte(text))
	if err != nil {
		t.Fatalf("%s: %v\n%s", key, err, text)
	}
	out := map[string]string{}
	for _, s := range c.Settings() {
		out[s.Name] = s.Value
	}
	return out
}

// settingName is the stats settings name of a key, in the config that
// configWith builds: its exchange is "x", its queue "q".
func settingName(key string) string {
	key = strings.Replace(key, "exchanges[].", "exchanges.x.", 1)
	key = strings.Replace(key, "queues[].bindings[].", "queues.q.bindings.0.", 1)
	return strings.Replace(key, "queues[].", "queues.q.", 1)
}

// configWith writes a config that sets key to the YAML text value (or
// leaves it out), with one exchange and one queue bound to it so that item
// keys have somewhere to be.
func configWith(key, value string, set bool) string {
	item := func(fields [][2]string, key string) string {
		var lines []string
		for _, f := range fields {
			if f[0] == key {
				continue
			}
			lines = append(lines, f[0]+": "+f[1])
		}
		if set && key != "" {
			lines = append(lines, key+": "+value)
		}
		if len(lines) == 0 {
			return "  - {}\n"
		}
		var b strings.Builder
		for i, l := range lines {
			if i == 0 {
				b.WriteString("  - " + l + "\n")
			} else {
				b.WriteString("    " + l + "\n")
			}
		}
		return b.String()
	}
	exchange := [][2]string{{"name", "x"}, {"type", "fanout"}, {"keys", "[k]"}}
	queue := [][2]string{{"name", "q"}, {"bindings", "[{exchange: x}]"}}
	switch {
	case strings.HasPrefix(key, "exchanges[]."):
		return "exchanges:\n" + item(exchange, strings.TrimPrefix(key, "exchanges[]."))
	case strings.HasPrefix(key, "queues[].bindings[]."):
		k := strings.TrimPrefix(key, "queues[].bindings[].")
		binding := [][2]string{{"exchange", "x"}}
		b := strings.ReplaceAll(item(binding, k), "\n", "\n    ")
		return "exchanges:\n" + item(exchange, "") + "queues:\n  - name: q\n    bindings:\n    " + strings.TrimRight(b, " ")
	case strings.HasPrefix(key, "queues[]."):
		return "exchanges:\n" + item(exchange, "") + "queues:\n" + item(queue, strings.TrimPrefix(key, "queues[]."))
	}
	if !set {
		return ""
	}
	parts := strings.Split(key, ".")
	var b strings.Builder
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i) + p + ":")
		if i == len(parts)-1 {
			b.WriteString(" " + value)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// tableColumn returns the first column's `names` of the rows of a Markdown
// file's table whose header starts with header.
func tableColumn(t *testing.T, file, header string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, file))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	in := false
	for line := range strings.SplitSeq(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "| "+header+" |"):
			in = true
		case in && strings.HasPrefix(line, "|---"):
		case in && strings.HasPrefix(line, "| `"):
			cell := strings.SplitN(line, "|", 3)[1]
			for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cell, -1) {
				names = append(names, m[1])
			}
		default:
			in = false
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: no table with the header %q", file, header)
	}
	return names
}

// TestMetricsReference: operations.md's metrics table lists exactly the
// mcbridge_* metrics a live gateway exposes after a command, with their
// types.
func TestMetricsReference(t *testing.T) {
	documented := tableColumn(t, "docs/operations.md", "metric")
	g := startGateway(t, "")
	// Series with command and result labels appear with the first command.
	runBash(t, block{file: "docs/operations.md", lang: "sh"}, g.localize("printf 'version\\r\\nquit\\r\\n' | nc 127.0.0.1 11211 | grep -q VERSION"), nil)
	out := runBash(t, block{file: "docs/operations.md", lang: "console"}, g.localize("curl -s http://127.0.0.1:9150/metrics"), nil)
	exposed := map[string]string{}
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[1] == "TYPE" && strings.HasPrefix(f[2], "mcbridge_") {
			exposed[f[2]] = f[3]
		}
	}
	if len(exposed) < 5 {
		t.Fatalf("the gateway exposes only %v:\n%s", exposed, clip(out))
	}
	for name := range exposed {
		if !slices.Contains(documented, name) {
			t.Errorf("docs/operations.md does not document the metric %s (%s)", name, exposed[name])
		}
	}
	for _, name := range documented {
		if _, ok := exposed[name]; !ok {
			t.Errorf("docs/operations.md documents the metric %s, which a gateway does not expose", name)
		}
	}
	rows := metricTypes(t)
	for name, typ := range exposed {
		if doc, ok := rows[name]; ok && doc != typ {
			t.Errorf("docs/operations.md: %s is a %s, documented as a %s", name, typ, doc)
		}
	}
}

// metricTypes reads the type column of operations.md's metrics table.
func metricTypes(t *testing.T) map[string]string {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(mcbridge_[a-z_]+)` \\| ([a-z]+) \\|").FindAllStringSubmatch(string(data), -1) {
		types[m[1]] = m[2]
	}
	return types
}

// TestAlertsReference: operations.md's alerts table lists exactly the
// alerts of deploy/prometheus/alerts.yml.
func TestAlertsReference(t *testing.T) {
	documented := tableColumn(t, "docs/operations.md", "alert")
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	var shipped []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				shipped = append(shipped, r.Alert)
			}
		}
	}
	slices.Sort(shipped)
	slices.Sort(documented)
	if !slices.Equal(shipped, documented) {
		t.Errorf("docs/operations.md's alerts %v, deploy/prometheus/alerts.yml's %v", documented, shipped)
	}
}

// TestBinaryStatuses: protocol.md's binary statuses are the ones mcproto
// sends.
func TestBinaryStatuses(t *testing.T) {
	documented := tableColumn(t, "docs/protocol.md", "status")
	data, err := os.ReadFile(filepath.Join(repoRoot, "mcproto", "binary.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range documented {
		if !regexp.MustCompile(`BinStatus\w+\s+BinStatus = ` + s + `\b`).Match(data) {
			t.Errorf("docs/protocol.md documents the binary status %s, which mcproto does not define", s)
		}
	}
}

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestLinks: every relative link of the docs reaches a file, and its
// #anchor a heading of that file; nothing points outside the repository
// for the project's own reference.
func TestLinks(t *testing.T) {
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for _, bad := range []string{"SPEC.md", "/work/shared", "shared folder"} {
			if strings.Contains(text, bad) {
				t.Errorf("%s mentions %q: the repository carries its own reference", file, bad)
			}
		}
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			full := filepath.Join(repoRoot, filepath.Dir(file), path)
			if path == "" {
				full = filepath.Join(repoRoot, file)
			}
			body, err := os.ReadFile(full)
			if err != nil {
				t.Errorf("%s: link %s: %v", file, target, err)
				continue
			}
			if anchor != "" && !slices.Contains(anchors(string(body)), anchor) {
				t.Errorf("%s: link %s: no heading with that anchor in %s", file, target, path)
			}
		}
	}
}

// anchors are the GitHub anchors of a Markdown file's headings.
func anchors(md string) []string {
	var out []string
	for line := range strings.SplitSeq(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				b.WriteRune(r)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// TestDocsTree: the README stays short and points into docs/, which has
// the references the README promises.
func TestDocsTree(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n > 250 {
		t.Errorf("README.md has %d lines; keep it under 250 and move the rest to docs/", n)
	}
	for _, f := range []string{"protocol", "guarantees", "configuration", "clients", "migration", "operations", "development"} {
		if !strings.Contains(string(data), "(docs/"+f+".md)") {
			t.Errorf("README.md does not link docs/%s.md", f)
		}
	}
}

// TestExamplesRun: every file under examples/ is run by some test: the
// clients/ tests (the programs), bridge's TestExampleConfigs (the configs,
// by their folder), or a block of the docs.
func TestExamplesRun(t *testing.T) {
	var runners strings.Builder
	for _, glob := range []string{"clients/*_test.go", "bridge/examples_test.go"} {
		files, _ := filepath.Glob(filepath.Join(repoRoot, glob))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			runners.Write(data)
		}
	}
	for _, file := range docFiles(t) {
		for _, b := range readBlocks(t, file) {
			if b.lang == "console" || b.lang == "sh" {
				runners.WriteString(b.text)
			}
			runners.WriteString(b.mark["config"] + "\n")
		}
	}
	all := runners.String()
	n := 0
	err := filepath.WalkDir(filepath.Join(repoRoot, "examples"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		rel, _ := filepath.Rel(repoRoot, path)
		dir := filepath.Dir(rel)
		switch {
		case strings.Contains(all, rel):
		case strings.HasSuffix(rel, ".go") && strings.Contains(all, dir): // go build ./examples/go/worker
		case strings.HasSuffix(rel, ".yml") && strings.Contains(all, "../"+dir+"/*.yml"):
		default:
			t.Errorf("%s is run by no test: add it to clients/ or to a docs block", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("found only %d files under examples/", n)
	}
}
