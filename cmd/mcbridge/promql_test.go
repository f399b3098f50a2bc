package main

import (
	"fmt"
	"slices"
	"strings"
)

// A small PromQL reader for the tests: it finds the metric names, the label
// names of their matchers and the grouping labels of an expression, so that
// a typo in a dashboard or an alert fails a test instead of drawing an
// empty panel. promtool checks the full syntax (promtool_test.go).

// promSelector is one metric name with the labels its matchers use.
type promSelector struct {
	metric string
	labels []string
}

// promRefs is what an expression refers to.
type promRefs struct {
	selectors []promSelector
	grouping  []string // labels of by, without, on, ignoring, group_left/right
	functions []string
}

// promAggregations are PromQL's aggregation operators.
var promAggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
	"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}

// promFunctions are PromQL's functions (Prometheus 2.x), plus Grafana's
// label_values for template variables.
var promFunctions = []string{"abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh",
	"atan", "atanh", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos",
	"cosh", "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
	"delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
	"histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
	"hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
	"log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
	"predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round",
	"scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc",
	"sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time",
	"timestamp", "vector", "year", "label_values"}

// promGroupingKeywords take a parenthesised list of label names.
var promGroupingKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// promKeywords are the other words that are not metric names.
var promKeywords = []string{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// parsePromQL reads expr. Grafana variables ($x, ${x}, [$__rate_interval])
// are skipped. It reports unbalanced brackets and unterminated strings.
func parsePromQL(expr string) (promRefs, error) {
	var refs promRefs
	s := expr
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	skipString := func() error {
		q := s[i]
		for i++; i < len(s); i++ {
			switch {
			case s[i] == '\\' && q != '`':
				i++
			case s[i] == q:
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string in %q", expr)
	}
	// labelList reads "(a, b)" after a grouping keyword.
	labelList := func() ([]string, error) {
		skipSpace()
		if i >= len(s) || s[i] != '(' {
			return nil, nil // group_left without labels
		}
		end := strings.IndexByte(s[i:], ')')
		if end < 0 {
			return nil, fmt.Errorf("unclosed label list in %q", expr)
		}
		var out []string
		for _, l := range strings.Split(s[i+1:i+end], ",") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		i += end + 1
		return out, nil
	}
	// matchers reads "{a="x", b=~"y"}" and returns the label names.
	matchers := func() ([]string, error) {
		var out []string
		i++ // {
		for {
			skipSpace()
			if i >= len(s) {
				return nil, fmt.Errorf("unclosed { in %q", expr)
			}
			switch c := s[i]; {
			case c == '}':
				i++
				return out, nil
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(); err != nil {
					return nil, err
				}
			case isIdentStart(c):
				start := i
				for i < len(s) && isIdentChar(s[i]) {
					i++
				}
				out = append(out, s[start:i])
			default:
				i++ // = != =~ !~ ,
			}
		}
	}
	depth := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return refs, err
			}
		case c == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return refs, fmt.Errorf("unclosed [ in %q", expr)
			}
			i += end + 1
		case c == '$':
			i++
			if i < len(s) && s[i] == '{' {
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return refs, fmt.Errorf("unclosed ${ in %q", expr)
				}
				i += end + 1
			}
			for i < len(s) && isIdentChar(s[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.') {
				i++
			}
		case c == '{':
			// A selector without a metric name.
			if _, err := matchers(); err != nil {
				return refs, err
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return refs, fmt.Errorf("unbalanced ) in %q", expr)
			}
			i++
		case isIdentStart(c):
			start := i
			for i < len(s) && isIdentChar(s[i]) {
				i++
			}
			word := s[start:i]
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case slices.Contains(promGroupingKeywords, word):
				labels, err := labelList()
				if err != nil {
					return refs, err
				}
				refs.grouping = append(refs.grouping, labels...)
			case slices.Contains(promAggregations, word):
				refs.functions = append(refs.functions, word)
			case slices.Contains(promKeywords, word):
			case next == '(':
				refs.functions = append(refs.functions, word)
			default:
				sel := promSelector{metric: word}
				if next == '{' {
					labels, err := matchers()
					if err != nil {
						return refs, err
					}
					sel.labels = labels
				}
				refs.selectors = append(refs.selectors, sel)
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return refs, fmt.Errorf("unbalanced ( in %q", expr)
	}
	return refs, nil
}
