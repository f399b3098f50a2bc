package config

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		key     string
		want    bool
	}{
		// Exact keys.
		{"orders", "orders", true},
		{"orders", "orders.eu", false},
		{"orders", "order", false},
		{"orders.eu", "orders.eu", true},
		{"orders.eu", "orders", false},
		{"", "", true},
		{"", "a", false},

		// "#" alone matches everything, the empty key included.
		{"#", "", true},
		{"#", "a", true},
		{"#", "a.b.c", true},
		{"#", ".", true},

		// "*" is exactly one word.
		{"*", "a", true},
		{"*", "", false},
		{"*", "a.b", false},
		{"*", ".", false},

		// Wildcards at the start.
		{"*.error", "app.error", true},
		{"*.error", "error", false},
		{"*.error", "a.b.error", false},
		{"#.error", "error", true},
		{"#.error", "a.b.error", true},
		{"#.error", "a.error.x", false},

		// In the middle.
		{"logs.*.error", "logs.app.error", true},
		{"logs.*.error", "logs.error", false},
		{"logs.*.error", "logs.a.b.error", false},
		{"logs.#.error", "logs.error", true},
		{"logs.#.error", "logs.a.b.error", true},
		{"logs.#.error", "logs.a.b.warn", false},

		// At the end.
		{"a.*", "a.b", true},
		{"a.*", "a", false},
		{"a.*", "a.b.c", false},
		{"a.#", "a", true},
		{"a.#", "a.b", true},
		{"a.#", "a.b.c", true},
		{"a.#", "ab", false},
		{"a.#", "b.a", false},

		// Empty words are words.
		{"a..b", "a..b", true},
		{"a.*.b", "a..b", true},
		{"a.#.b", "a..b", true},
		{"a.*", "a.", true},
		{"*.a", ".a", true},
		{"*", ".", false},
		{"*.*", ".", true},
		{"a.#", "a.", true},

		// Several wildcards, backtracking over "#".
		{"#.#", "", true},
		{"#.#", "a.b", true},
		{"#.*", "", false},
		{"#.*", "a", true},
		{"*.#", "a", true},
		{"#.a.#.b", "x.a.y.a.z.b", true},
		{"#.a.#.b", "x.a.y.a.z.b.c", false},
		{"#.a.*.b", "a.a.x.b", true},
		{"#.a.*.b", "a.x.a.b", false},
		{"*.*.*", "a.b", false},
		{"*.*.*", "a.b.c", true},

		// Words match whole, never by prefix.
		{"log.*", "logs.a", false},
		{"logs.#", "logsx", false},
	}
	for _, tt := range tests {
		p, err := ParsePattern(tt.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tt.pattern, err)
		}
		if got := p.Match(tt.key); got != tt.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.key, got, tt.want)
		}
		if got := refMatch(split(tt.pattern), split(tt.key)); got != tt.want {
			t.Errorf("reference matcher disagrees with the table on %q, %q", tt.pattern, tt.key)
		}
	}
}

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{in: "#"},
		{in: "*"},
		{in: ""},
		{in: "a..b"},
		{in: "a.*.#"},
		{in: "a*b", wantErr: `invalid pattern "a*b": word "a*b" mixes a wildcard with other characters; "*" and "#" must be whole words between dots`},
		{in: "#x", wantErr: `invalid pattern "#x": word "#x"`},
		{in: "a.**", wantErr: `word "**"`},
		{in: "logs.#error", wantErr: `word "#error"`},
		{in: strings.Repeat("a", 256), wantErr: "is 256 bytes long; AMQP allows at most 255"},
	}
	for _, tt := range tests {
		p, err := ParsePattern(tt.in)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ParsePattern(%q): %v", tt.in, err)
		case tt.wantErr == "" && p.String() != tt.in:
			t.Errorf("ParsePattern(%q).String() = %q", tt.in, p.String())
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParsePattern(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("MustParsePattern did not panic on a bad pattern")
		}
	}()
	MustParsePattern("a*")
}

// split turns a key or pattern into words the way RabbitMQ does: "" has none.
func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// refMatch is the obvious recursive definition, to check Match against.
func refMatch(p, k []string) bool {
	if len(p) == 0 {
		return len(k) == 0
	}
	switch p[0] {
	case "#":
		for i := 0; i <= len(k); i++ {
			if refMatch(p[1:], k[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(k) > 0 && refMatch(p[1:], k[1:])
	}
	return len(k) > 0 && k[0] == p[0] && refMatch(p[1:], k[1:])
}

func TestPatternMatchRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(alphabet []string) string {
		words := make([]string, r.IntN(5))
		for i := range words {
			words[i] = alphabet[r.IntN(len(alphabet))]
		}
		return strings.Join(words, ".")
	}
	for range 20000 {
		ps, key := pick([]string{"a", "b", "", "*", "#"}), pick([]string{"a", "b", ""})
		p := MustParsePattern(ps)
		if got, want := p.Match(key), refMatch(split(ps), split(key)); got != want {
			t.Fatalf("%q.Match(%q) = %v, want %v", ps, key, got, want)
		}
	}
}

func FuzzPatternMatch(f *testing.F) {
	f.Add("logs.#.error", "logs.a.b.error")
	f.Add("#.*", "")
	f.Add("a..b", "a..b")
	f.Fuzz(func(t *testing.T, pattern, key string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		if got, want := p.Match(key), refMatch(split(pattern), split(key)); got != want {
			t.Fatalf("%q.Match(%q) = %v, want %v", pattern, key, got, want)
		}
	})
}

// Match runs on every set: it must not allocate.
func TestPatternMatchAllocs(t *testing.T) {
	for _, ps := range []string{"orders", "#", "logs.#.error", "#.a.#.b", "*.*.x"} {
		p := MustParsePattern(ps)
		if n := testing.AllocsPerRun(100, func() { p.Match("logs.app.eu.a.b.error") }); n != 0 {
			t.Errorf("%q.Match allocates %v times", ps, n)
		}
	}
}

func BenchmarkPatternMatch(b *testing.B) {
	for _, bm := range []struct{ name, pattern, key string }{
		{"literal", "orders.eu", "orders.eu"},
		{"hash", "#", "a.b.c"},
		{"middle", "logs.*.error", "logs.app.error"},
		{"backtrack", "#.a.#.b", "x.a.y.a.z.c.d.e.f.b"},
	} {
		p := MustParsePattern(bm.pattern)
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Match(bm.key)
			}
		})
	}
}
