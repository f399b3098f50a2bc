package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// unknownKey explains a key that the mapping at path does not have. Besides
// typos, the usual cause is indentation: `urls:` written flush left instead
// of under `amqp:`, or a queue's `type:` pushed into its binding, and YAML
// reads such a line as a perfectly good key of the wrong mapping. So before
// looking for a typo, it looks for the same key in a nearby section and says
// which way to move the line.
func (w *walker) unknownKey(n *yaml.Node, i int, fields schemaFields, path, label string) error {
	k := n.Content[i]
	what := "unknown top-level key " + quote(k.Value)
	if label != "" {
		what = fmt.Sprintf("unknown key %s in %s", quote(k.Value), label)
	}
	above := ""
	if i >= 2 {
		above = n.Content[i-2].Value
	}
	if hint := placeHint(n, k.Value, above, path); hint != "" {
		return errAt(k, "%s; %s", what, hint)
	}
	return errAt(k, "%s%s", what, suggest(k.Value, fields))
}

// schemaKey is a key of the schema and the mapping that has it, as segments
// of a path with "[]" for any list item: {"queues", "[]", "bindings", "[]"}.
type schemaKey struct {
	parent []string
	key    string
	typ    reflect.Type
}

var schemaKeys = sync.OnceValue(func() []schemaKey {
	var keys []schemaKey
	var visit func(t reflect.Type, parent []string)
	visit = func(t reflect.Type, parent []string) {
		for _, f := range fieldsOf(t) {
			keys = append(keys, schemaKey{parent, f.key, f.typ})
			here := append(slices.Clip(parent), f.key)
			switch {
			case isLeaf(f.typ):
			case f.typ.Kind() == reflect.Struct:
				visit(f.typ, here)
			case !isLeaf(f.typ.Elem()):
				visit(f.typ.Elem(), append(here, "[]"))
			}
		}
	}
	visit(configType, nil)
	return keys
})

// placement is a place in the schema where an unknown key would be known.
type placement struct {
	rank   int      // lower is likelier
	depth  int      // tie-break within a rank: lower is likelier
	target []string // the key's path there, with the file's list indexes
	hint   string   // how to move the line
}

// placeHint finds where key, unknown in the mapping n at path, would be
// known, preferring in order: the block right above it (the previous key
// `above` leads there: the line is indented too little), an enclosing
// mapping (indented too much), a deeper mapping, a sibling section.
func placeHint(n *yaml.Node, key, above, path string) string {
	here := segments(path)
	var best *placement
	for _, sk := range schemaKeys() {
		if sk.key != key {
			continue
		}
		p, ok := place(n, here, sk, above)
		if ok && (best == nil || p.rank < best.rank || p.rank == best.rank && p.depth < best.depth) {
			best = &p
		}
	}
	if best == nil {
		return ""
	}
	target := displayPath(best.target)
	if len(best.target) == 1 {
		target = "the top-level key " + quote(key)
	}
	return fmt.Sprintf("did you mean %s? (%s)", target, best.hint)
}

func place(n *yaml.Node, here []string, sk schemaKey, above string) (placement, bool) {
	parent := sk.parent
	switch {
	case len(parent) < len(here) && slices.Equal(abstract(here[:len(parent)]), parent):
		// An enclosing mapping: here[len(parent)] is its key that leads to n.
		return placement{
			rank:   1,
			depth:  len(here) - len(parent),
			target: append(slices.Clone(here[:len(parent)]), sk.key),
			hint:   fmt.Sprintf("outdent it to line up with %s:", here[len(parent)]),
		}, true
	case len(parent) > len(here) && slices.Equal(abstract(here), parent[:len(here)]):
		below, ok := descend(n, parent[len(here):])
		if !ok {
			return placement{}, false
		}
		p := placement{rank: 2, depth: len(parent), target: append(append(slices.Clone(here), below...), sk.key)}
		if below[0] == above {
			p.rank = 0
		}
		p.hint = fmt.Sprintf("indent it under %s:", below[0])
		if i := lastItem(below); i >= 0 {
			p.hint = "indent it to line up with the keys of " + displayPath(append(slices.Clone(here), below[:i+1]...))
		}
		return p, true
	case !slices.Contains(parent, "[]"):
		return placement{
			rank:   3,
			target: append(slices.Clone(parent), sk.key),
			hint:   fmt.Sprintf("move it under %s:", displayPath(parent)),
		}, true
	}
	return placement{}, false
}

// descend follows the abstract segments rest down from the mapping n, taking
// the last item of each list, which is the one a line indented too little
// was meant for. It fails where a list is missing: there is no item to move
// the key into.
func descend(n *yaml.Node, rest []string) ([]string, bool) {
	var out []string
	cur := n
	for _, seg := range rest {
		if seg != "[]" {
			out = append(out, seg)
			cur = child(cur, seg)
			continue
		}
		if cur == nil || cur.Kind != yaml.SequenceNode || len(cur.Content) == 0 {
			return nil, false
		}
		last := len(cur.Content) - 1
		out = append(out, fmt.Sprintf("[%d]", last))
		cur = resolve(cur.Content[last])
	}
	return out, true
}

// child returns the value of key in the mapping n, or nil.
func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolve(n.Content[i+1])
		}
	}
	return nil
}

var segment = regexp.MustCompile(`[^.\[\]]+|\[\d*\]`)

// segments splits "queues[0].bindings" into "queues", "[0]", "bindings".
func segments(path string) []string { return segment.FindAllString(path, -1) }

func abstract(segs []string) []string {
	out := make([]string, len(segs))
	for i, s := range segs {
		if strings.HasPrefix(s, "[") {
			s = "[]"
		}
		out[i] = s
	}
	return out
}

func lastItem(segs []string) int {
	for i := len(segs) - 1; i >= 0; i-- {
		if strings.HasPrefix(segs[i], "[") {
			return i
		}
	}
	return -1
}

func displayPath(segs []string) string {
	var b strings.Builder
	for i, s := range segs {
		if i > 0 && !strings.HasPrefix(s, "[") {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	return b.String()
}

// suggest names the key the operator probably meant, or lists the keys.
func suggest(key string, fields schemaFields) string {
	best, bestDist := "", 3
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.key
		if dist := editDistance(key, f.key); dist < bestDist {
			best, bestDist = f.key, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return "; known keys: " + strings.Join(names, ", ")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
