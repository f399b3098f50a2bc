package main

import (
	"regexp"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// The dashboards' and alerts' PromQL is read with Prometheus's own parser:
// it refuses what Prometheus would refuse (syntax, unknown functions), and
// its syntax tree gives the metric names, the label names of their
// matchers and the grouping labels of an expression, so that a typo in a
// dashboard or an alert fails a test instead of drawing an empty panel.

// promSelector is one metric name with the labels its matchers use.
type promSelector struct {
	metric string
	labels []string
}

// promRefs is what an expression refers to.
type promRefs struct {
	selectors []promSelector
	grouping  []string // labels of by, without, on, ignoring, group_left/right
}

var (
	grafanaInterval = regexp.MustCompile(`\$\{?__(?:rate_interval|interval|range)\}?`)
	grafanaVariable = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
)

// fromGrafana is expr as Prometheus gets it from Grafana: the interval
// variables replaced by 5m, the others by ".*", as "All" does.
func fromGrafana(expr string) string {
	return grafanaVariable.ReplaceAllString(grafanaInterval.ReplaceAllString(expr, "5m"), ".*")
}

// parsePromQL parses expr as Prometheus would after Grafana's substitution.
func parsePromQL(expr string) (promRefs, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(fromGrafana(expr))
	if err != nil {
		return promRefs{}, err
	}
	var refs promRefs
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			sel := promSelector{metric: n.Name}
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel {
					sel.labels = append(sel.labels, m.Name)
				}
			}
			refs.selectors = append(refs.selectors, sel)
		case *parser.AggregateExpr:
			refs.grouping = append(refs.grouping, n.Grouping...)
		case *parser.BinaryExpr:
			if vm := n.VectorMatching; vm != nil {
				refs.grouping = append(refs.grouping, vm.MatchingLabels...)
				refs.grouping = append(refs.grouping, vm.Include...)
			}
		}
		return nil
	})
	return refs, nil
}
