package config

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// parse reads the one YAML document of a config file; nil when it is empty.
func parse(data []byte) (*yaml.Node, error) {
	root, extra, err := parseRaw(data)
	if err != nil {
		return nil, syntaxError(data, err)
	}
	if extra != nil {
		return nil, errAt(extra, "a second YAML document starts here; mcbridge reads one")
	}
	return root, nil
}

// parseRaw returns the first document's root and the start of a second
// document, if any, with the YAML library's own errors.
func parseRaw(data []byte) (root, extra *yaml.Node, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		extra = &next
	} else if !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	if len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	return root, extra, nil
}

// decode sets c from the document with the YAML library, over the defaults
// already in c: it refuses keys that no field has (KnownFields) and calls
// the leaf types' UnmarshalYAML. The walk has checked every key and value
// by then, so an error here means the two disagree; it is passed on without
// any value the library quotes, which could be a password.
func decode(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(c)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		err = errors.New(te.Errors[0])
	}
	var re *ruleError
	if errors.As(err, &re) {
		return &Error{Msg: "invalid value: " + re.rule}
	}
	line, msg := yamlError(err)
	return &Error{Line: line, Msg: "invalid value: " + redact(quoted.ReplaceAllString(msg, "…"))}
}

var (
	yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	quoted   = regexp.MustCompile("`[^`]*`")
)

// yamlError splits the YAML library's "yaml: line 3: ..." into the line and
// the message.
func yamlError(err error) (int, string) {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return line, m[2]
	}
	return 0, strings.TrimPrefix(msg, "yaml: ")
}

// syntaxError places a YAML syntax error on the line that caused it and,
// for the usual causes (indentation), says so. The YAML library reports the
// line where the enclosing block began, which for a key indented wrongly can
// be far above it. The offending line is the last line of the shortest
// prefix of the file that fails with the same error: a longer prefix still
// contains the mistake, a shorter one ends before it, so a binary search
// finds it in a few parses.
func syntaxError(data []byte, err error) error {
	line, msg := yamlError(err)
	msg = redact(msg) // it can quote an anchor or a tag
	lines := strings.SplitAfter(string(data), "\n")
	if line == 0 || line > len(lines) {
		return &Error{Line: line, Msg: "invalid YAML: " + msg}
	}
	failsAt := func(k int) bool { // the first k lines fail with msg
		end := 0
		for _, l := range lines[:k] {
			end += len(l)
		}
		_, _, err := parseRaw(data[:end])
		if err == nil {
			return false
		}
		_, m := yamlError(err)
		return redact(m) == msg
	}
	lo, hi := line, len(lines)
	for lo < hi {
		if mid := (lo + hi) / 2; failsAt(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if failsAt(hi) {
		line = hi
		msg = explain(msg, lines[line-1], previousLine(lines, line))
	}
	return &Error{Line: line, Msg: "invalid YAML: " + msg}
}

var keyLine = regexp.MustCompile(`^\s*(?:- +)?([A-Za-z0-9_.-]+):(?:\s|$)`)

// explain adds the likely cause to a YAML syntax error about text, the line
// it happened on.
func explain(msg, text, above string) string {
	indent := text[:len(text)-len(strings.TrimLeft(text, " \t"))]
	if strings.Contains(indent, "\t") {
		return "a tab indents this line; YAML indents with spaces only"
	}
	m := keyLine.FindStringSubmatch(text)
	if m == nil {
		return msg
	}
	key := strconv.Quote(m[1] + ":")
	switch msg {
	case "did not find expected key", "did not find expected '-' indicator":
		return msg + ": " + key + " is probably indented wrong; the keys of one mapping start in the same column"
	case "mapping values are not allowed in this context":
		if len(indent) > len(above)-len(strings.TrimLeft(above, " ")) {
			return msg + ": " + key + " is indented deeper than the line above; the keys of one mapping start in the same column"
		}
		return msg + `; quote a value that contains ": "`
	}
	return msg
}

// previousLine returns the last line before line (1-based) that holds more
// than a comment.
func previousLine(lines []string, line int) string {
	for i := line - 2; i >= 0; i-- {
		if t := strings.TrimSpace(lines[i]); t != "" && !strings.HasPrefix(t, "#") {
			return lines[i]
		}
	}
	return ""
}
