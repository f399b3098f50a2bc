package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// promtool finds Prometheus's checker. The tests never skip without it:
// .ci/run installs it (Debian package prometheus).
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is needed to check the alert rules and the Prometheus config: apt-get install prometheus (Debian), or put promtool from a Prometheus release on PATH (%v)", err)
	}
	return path
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The alert rules and compose's Prometheus config pass promtool.
func TestPromtoolRulesAndConfig(t *testing.T) {
	runPromtool(t, "check", "rules", alertsFile)
	runPromtool(t, "check", "config", "deploy/prometheus/prometheus.yml")
}

// Every dashboard expression is valid PromQL: with Grafana's variables
// replaced (intervals by 5m, the others by ".*", as "All" does), they are
// written as recording rules and checked by promtool.
func TestPromtoolDashboardExprs(t *testing.T) {
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, e := range dashboardExprs(t) {
		expr := fromGrafana(e.expr)
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:expr_%d", i), Expr: expr})
		t.Logf("%s: %s", e.where, expr)
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}}
	data, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool(t), "check", "rules", file)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the dashboard expressions: %v\n%s", err, out)
	}
}
