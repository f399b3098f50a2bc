package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The walk checks a parsed document against the schema that Config's yaml
// tags describe, in file order, before the YAML library decodes it. It is
// what lets every error name the line, the setting as an operator reads it
// (`queues[1] "errors": max_length`) and the value as written, and what
// notices the mistakes the library accepts or reports vaguely: a key given
// twice, a number YAML would read as octal, "yes" for a boolean, a key with
// no value, a key that belongs to another section. It also records the
// layout that the rules after decoding use to place their errors.

// maxAliasedValues bounds what aliases and merge keys may expand to, so that
// a small file of nested aliases cannot make loading take exponential time.
const maxAliasedValues = 10000

type walker struct {
	lay     layout
	walking map[*yaml.Node]bool // mappings being walked: merging one is a cycle
	budget  int                 // values that aliases may still expand to
	aliased int                 // > 0 while under an alias
}

var configType = reflect.TypeFor[Config]()

func walk(root *yaml.Node) (layout, error) {
	w := &walker{lay: layout{}, walking: map[*yaml.Node]bool{}, budget: maxAliasedValues}
	if root == nil {
		return w.lay, nil
	}
	if n := resolve(root); n.Kind != yaml.MappingNode && !isNull(n) {
		return nil, errAt(n, "the config must be a mapping of keys to values, got %s", kindName(n))
	}
	if err := w.value(root, configType, "", ""); err != nil {
		return nil, err
	}
	return w.lay, nil
}

// value checks n as a value of type t found at path.
func (w *walker) value(n *yaml.Node, t reflect.Type, path, label string) error {
	if n.Kind == yaml.AliasNode {
		n = resolve(n)
		w.aliased++
		defer func() { w.aliased-- }()
	}
	if w.aliased > 0 {
		if w.budget--; w.budget < 0 {
			return errAt(n, "aliases in %s expand to more than %d values", orTop(label), maxAliasedValues)
		}
	}
	if _, seen := w.lay[path]; !seen && path != "" {
		s := spot{line: n.Line, label: label}
		if n.Kind == yaml.ScalarNode {
			s.text = n.Value
		}
		w.lay[path] = s
	}
	switch {
	case isLeaf(t):
		return w.leaf(n, t, path, label)
	case t.Kind() == reflect.Struct:
		return w.mapping(n, t, path, label)
	default:
		return w.list(n, t, path, label)
	}
}

func (w *walker) mapping(n *yaml.Node, t reflect.Type, path, label string) error {
	if isNull(n) {
		return nil // a section left empty keeps its defaults
	}
	if n.Kind != yaml.MappingNode {
		return wrongKind(n, "a mapping", label)
	}
	w.walking[n] = true
	defer delete(w.walking, n)
	fields := fieldsOf(t)
	seen := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			merges = append(merges, k, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return errAt(k, "keys in %s must be plain words, got %s", orTop(label), kindName(k))
		}
		if line, dup := seen[k.Value]; dup {
			return errAt(k, "key %s is repeated in %s (first at line %d)", quote(k.Value), orTop(label), line)
		}
		seen[k.Value] = k.Line
		f, ok := fields.lookup(k.Value)
		if !ok {
			return w.unknownKey(n, i, fields, path, label)
		}
		if err := w.value(v, f.typ, joinPath(path, k.Value), joinLabel(label, k.Value)); err != nil {
			return err
		}
	}
	// Merged keys come after the explicit ones so that the layout, like
	// YAML, lets an explicit key win.
	for i := 0; i < len(merges); i += 2 {
		if err := w.merge(merges[i], merges[i+1], t, path, label); err != nil {
			return err
		}
	}
	return nil
}

// merge checks the mappings that a merge key ("<<: *base") brings into a
// mapping of type t.
func (w *walker) merge(k, v *yaml.Node, t reflect.Type, path, label string) error {
	sources := []*yaml.Node{v}
	if resolve(v).Kind == yaml.SequenceNode {
		sources = resolve(v).Content
	}
	if len(sources) == 0 {
		return errAt(k, "merge key << in %s must refer to a mapping", orTop(label))
	}
	for _, s := range sources {
		switch m := resolve(s); {
		case m.Kind != yaml.MappingNode:
			return errAt(k, "merge key << in %s must refer to a mapping", orTop(label))
		case w.walking[m]:
			return errAt(k, "merge key << in %s merges a mapping into itself", orTop(label))
		}
		if err := w.value(s, t, path, label); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) list(n *yaml.Node, t reflect.Type, path, label string) error {
	if isNull(n) {
		return nil // an empty list
	}
	if n.Kind != yaml.SequenceNode {
		return wrongKind(n, "a list", label)
	}
	named := false
	if t.Elem().Kind() == reflect.Struct {
		_, named = fieldsOf(t.Elem()).lookup("name")
	}
	for i, item := range n.Content {
		name := ""
		if named {
			name = peekName(item)
		}
		if err := w.value(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), itemLabel(label, i, name)); err != nil {
			return err
		}
	}
	return nil
}

// emptyHints replace "remove the key to use the default" where that is not
// the whole story.
var emptyHints = map[string]string{
	"metrics_listen": `write metrics_listen: "" to disable it, or remove the key for the default ` + DefaultMetricsListen,
}

func (w *walker) leaf(n *yaml.Node, t reflect.Type, path, label string) error {
	if n.Kind != yaml.ScalarNode {
		return errAt(n, "%s must be a single value, got %s", label, kindName(n))
	}
	if isNull(n) {
		hint, ok := emptyHints[path]
		switch {
		case ok:
		case strings.HasSuffix(path, "]"):
			hint = "remove the entry or give it a value"
		default:
			hint = "remove the key to use the default"
		}
		return errAt(n, "%s has no value; %s", label, hint)
	}
	if rule := checkLeaf(n, t); rule != "" {
		return errAt(n, "%s %s %s", label, quote(n.Value), rule)
	}
	return nil
}

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	durationType    = reflect.TypeFor[time.Duration]()
	decimal         = regexp.MustCompile(`^[-+]?(0|[1-9][0-9]*)$`)
	octal           = regexp.MustCompile(`^[-+]?0[0-9_]+$`)
)

func isLeaf(t reflect.Type) bool {
	k := t.Kind()
	return reflect.PointerTo(t).Implements(unmarshalerType) || (k != reflect.Struct && k != reflect.Slice)
}

// checkLeaf returns the rule that the scalar n breaks as a value of type t,
// or "". Leaf types answer for themselves; for Go's own types the checks
// are stricter than the YAML library, which reads 010 as 8, "yes" as true
// and 1_000 as 1000.
func checkLeaf(n *yaml.Node, t reflect.Type) string {
	if u, ok := reflect.New(t).Interface().(yaml.Unmarshaler); ok {
		if err := u.UnmarshalYAML(n); err != nil {
			var re *ruleError
			if errors.As(err, &re) {
				return re.rule
			}
			return "is not valid: " + err.Error()
		}
		return ""
	}
	tag := n.ShortTag()
	switch {
	case t == durationType:
		if _, err := time.ParseDuration(n.Value); err != nil || tag != "!!str" {
			return "is not a duration; use Go syntax such as 500ms, 30s, 5m or 1h30m"
		}
	case t.Kind() == reflect.Bool:
		switch n.Value {
		case "true", "True", "TRUE", "false", "False", "FALSE":
			if tag == "!!bool" {
				return ""
			}
		}
		return "is not a boolean; want true or false"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		switch {
		case octal.MatchString(n.Value):
			return "starts with 0, which YAML reads as octal; write the number without leading zeros"
		case !decimal.MatchString(n.Value):
			return "is not a whole number"
		case tag != "!!int":
			return "is quoted; write the number without quotes"
		}
		if _, err := strconv.ParseInt(n.Value, 10, t.Bits()); err != nil {
			return "is too large"
		}
	case t.Kind() == reflect.String:
		if tag == "!!binary" {
			return "is binary; write the text itself"
		}
	}
	return ""
}

// wrongKind reports a value of the wrong shape, with the likely fix for
// the two shapes operators mix up most.
func wrongKind(n *yaml.Node, want, label string) error {
	msg := fmt.Sprintf("%s must be %s, got %s", label, want, kindName(n))
	switch {
	case want == "a list" && n.Kind == yaml.ScalarNode:
		msg += fmt.Sprintf("; write [%s] for a list of one", quote(n.Value))
	case want == "a mapping" && n.Kind == yaml.SequenceNode && len(n.Content) > 0 && resolve(n.Content[0]).Kind == yaml.MappingNode:
		msg += `; remove the "- " in front of its keys`
	}
	return errAt(n, "%s", msg)
}

type schemaField struct {
	key string
	typ reflect.Type
}

type schemaFields []schemaField

// fieldsOf lists the keys of a config struct in declaration order.
func fieldsOf(t reflect.Type) schemaFields {
	var fs schemaFields
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && key != "" && key != "-" {
			fs = append(fs, schemaField{key, f.Type})
		}
	}
	return fs
}

func (fs schemaFields) lookup(key string) (schemaField, bool) {
	for _, f := range fs {
		if f.key == key {
			return f, true
		}
	}
	return schemaField{}, false
}

func errAt(n *yaml.Node, format string, args ...any) error {
	return &Error{Line: n.Line, Msg: fmt.Sprintf(format, args...)}
}

func orTop(label string) string {
	if label == "" {
		return "the top level"
	}
	return label
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n = resolve(n); n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return "the value " + quote(n.Value)
	}
	return "something else"
}

// peekName reads a list item's name early so that errors about any of its
// keys can say which queue or exchange they are in.
func peekName(n *yaml.Node) string {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], resolve(n.Content[i+1]); k.Value == "name" && v.Kind == yaml.ScalarNode && !isNull(v) {
			return v.Value
		}
	}
	return ""
}
