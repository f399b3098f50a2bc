package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Pattern is an AMQP topic pattern over dot-separated words: "*" matches
// exactly one word, "#" zero or more words, any other word only itself. It is
// the syntax operators already know from topic bindings, so one notation
// serves both memcache keys and routing keys.
//
// As in RabbitMQ, the empty string has no words (so "#" matches "" and "*"
// does not), while empty words between dots are words ("a..b" has three).
// The zero Pattern is the empty pattern.
type Pattern struct {
	raw   string
	words []string // nil for the empty pattern
	wild  bool     // some word is "*" or "#"; without one, Match is string equality
	all   bool     // every word is "#": matches any key (the default auto_declare pattern)
}

// ParsePattern compiles s. Wildcards must be whole words: RabbitMQ would take
// "a*b" or "#x" literally, which is never what the author meant.
func ParsePattern(s string) (Pattern, error) {
	p, rule := parsePattern(s)
	if rule != "" {
		return Pattern{}, fmt.Errorf("invalid pattern %s: %s", quote(s), rule)
	}
	return p, nil
}

// MustParsePattern is ParsePattern for patterns known to be valid, such as
// constants; it panics otherwise.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic("config: " + err.Error())
	}
	return p
}

// parsePattern returns the broken rule rather than an error so that Load can
// phrase it with the YAML path.
func parsePattern(s string) (Pattern, string) {
	if len(s) > maxShortString {
		return Pattern{}, fmt.Sprintf("is %d bytes long; AMQP allows at most %d", len(s), maxShortString)
	}
	p := Pattern{raw: s}
	if s == "" {
		return p, ""
	}
	p.words = strings.Split(s, ".")
	p.all = true
	for _, w := range p.words {
		p.all = p.all && w == "#"
		switch {
		case w == "*" || w == "#":
			p.wild = true
		case strings.ContainsAny(w, "*#"):
			return Pattern{}, fmt.Sprintf("word %s mixes a wildcard with other characters; \"*\" and \"#\" must be whole words between dots", quote(w))
		}
	}
	return p, ""
}

// UnmarshalYAML reads a pattern over memcache keys (auto_declare.keys, an
// exchange's keys).
func (p *Pattern) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalar(n)
	if err != nil {
		return err
	}
	v, rule := parseKeyPattern(s)
	if rule != "" {
		return &ruleError{rule}
	}
	*p = v
	return nil
}

// parseKeyPattern adds what a pattern over memcache keys needs on top of
// parsePattern: a pattern no key can match is a mistake, not a no-op.
func parseKeyPattern(s string) (Pattern, string) {
	switch {
	case s == "":
		return Pattern{}, "matches no key: memcache keys are never empty"
	case len(s) > MaxQueueNameLength:
		return Pattern{}, fmt.Sprintf("is %d bytes long; memcache keys are at most %d", len(s), MaxQueueNameLength)
	case strings.ContainsRune(s, '/'):
		return Pattern{}, `contains "/", which ends the queue name in a key (kestrel options follow it), so no key would match`
	}
	if rule := checkChars(s); rule != "" {
		return Pattern{}, rule
	}
	p, rule := parsePattern(s)
	if rule != "" {
		return Pattern{}, "is not a valid pattern: " + rule
	}
	return p, ""
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// Match reports whether key matches the pattern. It runs on every set, so it
// walks the key by byte offsets and allocates nothing. "#" is handled like
// "*" in glob matching: remember the last "#" and, on a mismatch, let it
// swallow one more word; that is enough because words are atomic.
func (p Pattern) Match(key string) bool {
	if !p.wild {
		return key == p.raw
	}
	if p.all {
		return true
	}
	words := p.words
	end := len(key) + 1 // offset meaning "no key words left"
	k := 0              // offset of the current key word
	if key == "" {
		k = end
	}
	w := 0
	hashW, hashK := -1, 0 // last "#" seen, and where its words end so far
	for k < end {
		next := nextWord(key, k)
		if w < len(words) {
			switch pw := words[w]; {
			case pw == "#":
				hashW, hashK = w, k
				w++
				continue
			case pw == "*" || pw == key[k:next-1]:
				w++
				k = next
				continue
			}
		}
		if hashW < 0 {
			return false
		}
		w = hashW + 1
		hashK = nextWord(key, hashK)
		k = hashK
	}
	for w < len(words) && words[w] == "#" {
		w++
	}
	return w == len(words)
}

// nextWord returns the offset of the word after the one starting at i, or
// len(key)+1 when that was the last word.
func nextWord(key string, i int) int {
	if j := strings.IndexByte(key[i:], '.'); j >= 0 {
		return i + j + 1
	}
	return len(key) + 1
}
