package config

import (
	"fmt"
	"strconv"
	"strings"
)

// layout records where each setting is in the file, by path: "listen",
// "amqp.urls[1]", "queues[0].bindings[1].routing_key". The walk fills it;
// the rules that run after decoding (validate.go) use it to name the line,
// repeat the value as the operator wrote it, and tell a key left out from
// one given.
type layout map[string]spot

type spot struct {
	line  int
	text  string // a scalar as written; "" for a mapping or a list
	label string // how messages name the setting: `queues[0] "jobs": max_length`
}

// has reports whether the file gives path (a merge key counts).
func (l layout) has(path string) bool { _, ok := l[path]; return ok }

// line returns the line of path, or of the nearest enclosing setting the
// file gives; 0 when there is none.
func (l layout) line(path string) int {
	for {
		if s, ok := l[path]; ok {
			return s.line
		}
		if path == "" {
			return 0
		}
		path, _ = parentPath(path)
	}
}

// label names path in messages, whether or not the file gives it.
func (l layout) label(path string) string {
	if s, ok := l[path]; ok {
		return s.label
	}
	if path == "" {
		return ""
	}
	parent, last := parentPath(path)
	if strings.HasPrefix(last, "[") {
		return l.label(parent) + last
	}
	return joinLabel(l.label(parent), last)
}

// text returns the value at path as written, or def (a default) formatted
// when the file leaves it out. Passwords are masked either way.
func (l layout) text(path string, def any) string {
	if s, ok := l[path]; ok && s.text != "" {
		return redact(s.text)
	}
	return redact(fmt.Sprint(def))
}

// parentPath splits "queues[0].name" into "queues[0]" and "name", and
// "queues[0]" into "queues" and "[0]".
func parentPath(path string) (parent, last string) {
	if strings.HasSuffix(path, "]") {
		i := strings.LastIndexByte(path, '[')
		return path[:i], path[i:]
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return "", path
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// joinLabel appends a key to a label: "limits" + "max_item_size" is
// "limits.max_item_size", while a named list entry gets a colon so the name
// stays readable: `queues[1] "errors": max_length`.
func joinLabel(label, key string) string {
	switch {
	case label == "":
		return key
	case strings.HasSuffix(label, `"`):
		return label + ": " + key
	}
	return label + "." + key
}

// itemLabel names a list entry the way errors print it: queues[1] "errors".
func itemLabel(list string, i int, name string) string {
	if name == "" {
		return fmt.Sprintf("%s[%d]", list, i)
	}
	return fmt.Sprintf("%s[%d] %s", list, i, quote(name))
}

// broken reports that the setting at path breaks a rule, showing its value
// as written ("amqp.heartbeat 1500ms must be whole seconds"), or v when the
// file leaves the setting out.
func (l layout) broken(path string, v any, format string, args ...any) error {
	return &Error{Line: l.line(path), Msg: l.label(path) + " " + l.text(path, v) + " " + fmt.Sprintf(format, args...)}
}

// invalid is broken with the value quoted, for a value that is not of the
// right form at all (`listen "11211" is not a host:port address`).
func (l layout) invalid(path string, v any, format string, args ...any) error {
	return &Error{Line: l.line(path), Msg: l.label(path) + " " + strconv.Quote(l.text(path, v)) + " " + fmt.Sprintf(format, args...)}
}

// errorf reports a problem on the line of path in its own words.
func (l layout) errorf(path string, format string, args ...any) error {
	return &Error{Line: l.line(path), Msg: fmt.Sprintf(format, args...)}
}
