package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	yaml "go.yaml.in/yaml/v3"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// promExpr is one PromQL expression found in a file.
type promExpr struct {
	where string // file and panel or rule
	expr  string
}

// grafanaDashboard is the part of a dashboard JSON the tests read.
type grafanaDashboard struct {
	UID           string          `json:"uid"`
	Title         string          `json:"title"`
	SchemaVersion int             `json:"schemaVersion"`
	Panels        []grafanaPanel  `json:"panels"`
	Templating    grafanaTemplate `json:"templating"`
}

type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Datasource *grafanaDatasource        `json:"datasource"`
	GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		Expr       string             `json:"expr"`
		RefID      string             `json:"refId"`
		Datasource *grafanaDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // collapsed rows
}

type grafanaTemplate struct {
	List []struct {
		Name       string             `json:"name"`
		Type       string             `json:"type"`
		Query      json.RawMessage    `json:"query"`
		Datasource *grafanaDatasource `json:"datasource"`
	} `json:"list"`
}

// loadDashboards reads every dashboards/*.json.
func loadDashboards(t *testing.T) map[string]grafanaDashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards/*.json (%v)", err)
	}
	out := map[string]grafanaDashboard{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d grafanaDashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

func allPanels(ps []grafanaPanel) []grafanaPanel {
	var out []grafanaPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// dashboardExprs are the PromQL expressions of every panel target and of
// every query variable (label_values(selector, label) becomes the selector
// and a grouping by label, so the label is checked too).
func dashboardExprs(t *testing.T) []promExpr {
	t.Helper()
	var out []promExpr
	for file, d := range loadDashboards(t) {
		for _, p := range allPanels(d.Panels) {
			for _, tg := range p.Targets {
				out = append(out, promExpr{fmt.Sprintf("%s panel %q %s", file, p.Title, tg.RefID), tg.Expr})
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				_ = json.Unmarshal(v.Query, &q.Query) // older dashboards: a plain string
			}
			m := labelValuesQuery.FindStringSubmatch(q.Query)
			if m == nil {
				t.Errorf("%s variable %s: query %q is not label_values(selector, label)", file, v.Name, q.Query)
				continue
			}
			out = append(out, promExpr{fmt.Sprintf("%s variable %s", file, v.Name), "count by (" + m[2] + ") (" + m[1] + ")"})
		}
	}
	return out
}

// alertsFile is the Prometheus rules file of docker compose.
const alertsFile = "deploy/prometheus/alerts.yml"

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func alertExprs(t *testing.T) []promExpr {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), alertsFile))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var out []promExpr
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out = append(out, promExpr{alertsFile + " alert " + r.Alert, r.Expr})
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no rules", alertsFile)
	}
	return out
}

// seriesIndex maps every series name a scrape exposes (a histogram exposes
// _bucket, _sum and _count) to its label names.
type seriesIndex map[string][]string

func (ix seriesIndex) add(f *dto.MetricFamily) {
	labels := map[string]bool{}
	for _, m := range f.GetMetric() {
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = true
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for l := range labels {
			if !yield(l) {
				return
			}
		}
	})
	name := f.GetName()
	switch f.GetType() {
	case dto.MetricType_HISTOGRAM:
		ix[name+"_bucket"] = append(slices.Clone(names), "le")
		ix[name+"_sum"] = names
		ix[name+"_count"] = names
	case dto.MetricType_SUMMARY:
		ix[name] = append(slices.Clone(names), "quantile")
		ix[name+"_sum"] = names
		ix[name+"_count"] = names
	default:
		ix[name] = names
	}
}

// rabbitmqSeries are the rabbitmq_prometheus plugin's series the dashboard
// uses (group queue_coarse_metrics and queue_consumer_count, per object:
// labels vhost and queue). A live scrape of the plugin replaces this list
// when 127.0.0.1:15692 answers.
var rabbitmqSeries = seriesIndex{
	"rabbitmq_queue_messages_ready":   {"queue", "vhost"},
	"rabbitmq_queue_messages_unacked": {"queue", "vhost"},
	"rabbitmq_queue_messages":         {"queue", "vhost"},
	"rabbitmq_queue_consumers":        {"queue", "vhost"},
}

// liveSeries scrapes a real mcbridge after a little traffic (every metric
// family then has a series) and, when it is enabled, RabbitMQ's own
// Prometheus plugin.
func liveSeries(t *testing.T) seriesIndex {
	t.Helper()
	q := testbroker.Name(t, "q")
	g := startRun(t, testYAML(t, q))
	c := mctest.Dial(t, g.mcAddr)
	c.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")
	c.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nx\r\nEND\r\n")
	c.Do("delete "+q+"\r\n", "DELETED\r\n")
	c.Quit()
	ix := seriesIndex{}
	for _, f := range g.scrape().fams {
		ix.add(f)
	}
	// Prometheus adds up{job,instance} for every target it scrapes.
	ix["up"] = nil

	resp, err := httpClient.Get("http://127.0.0.1:15692/metrics/per-object")
	if err != nil {
		t.Logf("RabbitMQ's prometheus plugin is not enabled here (%v): checking rabbitmq_* names against the plugin's documented list", err)
		for k, v := range rabbitmqSeries {
			ix[k] = v
		}
		return ix
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape RabbitMQ's plugin: %d %v", resp.StatusCode, err)
	}
	for _, f := range parseScrape(t, string(body)).fams {
		ix.add(f)
	}
	return ix
}

// checkExpr reports what expr names that ix does not have.
func checkExpr(ix seriesIndex, expr string) []string {
	refs, err := parsePromQL(expr)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if len(refs.selectors) == 0 {
		problems = append(problems, "names no metric")
	}
	scrapeLabels := []string{"job", "instance"} // added by Prometheus
	known := slices.Clone(scrapeLabels)
	for _, sel := range refs.selectors {
		labels, ok := ix[sel.metric]
		if !ok {
			problems = append(problems, fmt.Sprintf("metric %s does not exist", sel.metric))
			continue
		}
		known = append(known, labels...)
		for _, l := range sel.labels {
			if !slices.Contains(labels, l) && !slices.Contains(scrapeLabels, l) {
				problems = append(problems, fmt.Sprintf("%s has no label %q (it has %v)", sel.metric, l, labels))
			}
		}
	}
	for _, l := range refs.grouping {
		if !slices.Contains(known, l) {
			problems = append(problems, fmt.Sprintf("grouping label %q is on none of the metrics (%v)", l, known))
		}
	}
	return problems
}

// Every PromQL expression of the dashboards and alert rules names only
// metrics and labels that a live scrape has.
func TestDashboardAndAlertMetricsExist(t *testing.T) {
	ix := liveSeries(t)
	exprs := append(dashboardExprs(t), alertExprs(t)...)
	used := map[string]bool{}
	for _, e := range exprs {
		for _, p := range checkExpr(ix, e.expr) {
			t.Errorf("%s: %s\n  expr: %s", e.where, p, e.expr)
		}
		refs, _ := parsePromQL(e.expr)
		for _, s := range refs.selectors {
			used[s.metric] = true
		}
	}
	// The dashboard shows every SPEC §5 metric and RabbitMQ's queue depth.
	for _, name := range append(slices.Clone(specMetrics), "rabbitmq_queue_messages_ready") {
		if name == "mcbridge_publish_duration_seconds" {
			name += "_bucket"
		}
		if !used[name] {
			t.Errorf("no dashboard or alert expression uses %s", name)
		}
	}
}

// The checker itself catches typos: a test that passes on anything proves
// nothing.
func TestPromQLChecker(t *testing.T) {
	ix := seriesIndex{
		"mcbridge_commands_total":                  {"command", "result"},
		"mcbridge_publish_duration_seconds_bucket": {"le"},
		"up": nil,
	}
	tests := []struct {
		name, expr string
		wantErr    string // "" = clean
	}{
		{"rate", `sum by (command) (rate(mcbridge_commands_total{result="hit"}[$__rate_interval]))`, ""},
		{"quantile", `histogram_quantile(0.99, sum by (le, instance) (rate(mcbridge_publish_duration_seconds_bucket{instance=~"$instance"}[5m])))`, ""},
		{"grafana vars", `sum(rate(mcbridge_commands_total{job=~"$job", instance=~"${instance}"}[$__interval])) > 0`, ""},
		{"binary ops", `up{job="mcbridge"} == 0 and on (instance) sum by (instance) (mcbridge_commands_total) > bool 1`, ""},
		{"strings with braces", `mcbridge_commands_total{command=~"a{1}|b(c)"}`, ""},
		{"metric typo", `sum(rate(mcbridge_command_total[5m]))`, "metric mcbridge_command_total does not exist"},
		{"histogram without suffix", `histogram_quantile(0.9, rate(mcbridge_publish_duration_seconds[5m]))`, "does not exist"},
		{"label typo", `mcbridge_commands_total{reslt="hit"}`, `has no label "reslt"`},
		{"grouping typo", `sum by (comand) (mcbridge_commands_total)`, `grouping label "comand"`},
		{"function typo", `sum(rat(mcbridge_commands_total[5m]))`, `unknown function with name "rat"`},
		{"no metric", `vector(1)`, "names no metric"},
		{"unbalanced", `sum(rate(mcbridge_commands_total[5m])`, "unclosed left parenthesis"},
		{"unterminated", `mcbridge_commands_total{result="hit}`, "unterminated"},
		{"instant vector to rate", `rate(mcbridge_commands_total)`, "expected type range vector"},
		{"group_left typo", `mcbridge_commands_total * on (instance) group_left (comand) up`, `grouping label "comand"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := strings.Join(checkExpr(ix, tt.expr), "; ")
			switch {
			case tt.wantErr == "" && problems != "":
				t.Errorf("%s: unexpected problems: %s", tt.expr, problems)
			case tt.wantErr != "" && !strings.Contains(problems, tt.wantErr):
				t.Errorf("%s: problems %q, want one containing %q", tt.expr, problems, tt.wantErr)
			}
		})
	}
}

// The dashboard is provisionable: a uid, a schema version Grafana 10/11
// reads, a datasource variable of type prometheus that every panel and
// target uses, unique panel ids with positions.
func TestDashboardShape(t *testing.T) {
	for file, d := range loadDashboards(t) {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q title %q: both are needed for provisioning", file, d.UID, d.Title)
		}
		if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
			t.Errorf("%s: schemaVersion %d, want 36..41 (Grafana 9.x-11.x)", file, d.SchemaVersion)
		}
		var dsVar bool
		for _, v := range d.Templating.List {
			if v.Name == "datasource" && v.Type == "datasource" && strings.Trim(string(v.Query), `"`) == "prometheus" {
				dsVar = true
			}
			if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
				t.Errorf("%s: variable %s does not query ${datasource}", file, v.Name)
			}
		}
		if !dsVar {
			t.Errorf("%s: no template variable \"datasource\" of type datasource for prometheus", file)
		}
		ids := map[int]bool{}
		for _, p := range allPanels(d.Panels) {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", file, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("%s: panel %q has no gridPos", file, p.Title)
			}
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" || p.Datasource.Type != "prometheus" {
				t.Errorf("%s: panel %q datasource %+v, want prometheus ${datasource}", file, p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("%s: panel %q target %s does not use ${datasource}", file, p.Title, tg.RefID)
				}
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q target %s has no expr", file, p.Title, tg.RefID)
				}
			}
		}
	}
}
