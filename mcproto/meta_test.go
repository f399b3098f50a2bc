package mcproto

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"testing/iotest"
)

// describeMeta renders a parse result with its meta flags.
func describeMeta(c *Command, err error) string {
	s := describe(c, err)
	if c == nil || err != nil || !c.Op.IsMeta() || c.Op == OpMetaNoop {
		return s
	}
	m := &c.Meta
	s += fmt.Sprintf(" | key=%s toks=%q", m.Key, m.Tokens)
	for _, f := range []struct {
		on   bool
		name string
	}{{m.Base64, "b"}, {m.Value, "v"}, {m.Quiet, "q"}, {m.HasTTL, "T"}, {m.HasCas, "C"}} {
		if f.on {
			s += " " + f.name
		}
	}
	if m.Mode != 0 {
		s += " M" + string(m.Mode)
	}
	if m.Opaque != nil {
		s += fmt.Sprintf(" O=%q", m.Opaque)
	}
	return s
}

func parseAllMeta(t testing.TB, r *bufio.Reader, maxItem int) []string {
	p := NewParser(r, maxItem)
	var out []string
	for i := 0; ; i++ {
		if i > 1<<16 {
			t.Fatal("no progress")
		}
		c, err := p.Next()
		out = append(out, describeMeta(c, err))
		if terminal(err) {
			return out
		}
	}
}

var metaTests = []struct {
	name, input string
	want        []string
}{
	{"mg", "mg jobs v f k c\r\n", []string{`mg jobs | key=jobs toks=["v" "f" "k" "c"] v`}},
	{"mg no flags", "mg jobs\r\n", []string{`mg jobs | key=jobs toks=[]`}},
	{"mg options", "mg q/close/open v\r\n", []string{`mg q/close/open | key=q/close/open toks=["v"] v`}},
	{"mg T O q", "mg k T30 O abc q\r\n", []string{`mg k exp=30 | key=k toks=["T30" "O" "abc" "q"] q T O=""`}},
	{"mg ignores", "mg k vv kx h l u E5 N30 R30 Z F9 C9 M? I x 9\r\n", []string{`mg k | key=k toks=["vv" "kx" "h" "l" "u" "E5" "N30" "R30" "Z" "F9" "C9" "M?" "I" "x" "9"] v`}},
	{"mg T negative", "mg k T-1\r\n", []string{`mg k exp=-1 | key=k toks=["T-1"] T`}},
	{"mg base64", "mg Zm9v b k v\r\n", []string{`mg foo | key=Zm9v toks=["b" "k" "v"] b v`}},
	{"mg base64 bad", "mg Zm9v= b\r\nmn\r\n", []string{"mg !CLIENT_ERROR error decoding key", "mn", "!EOF"}},
	{"mg base64 control", "mg " + base64.StdEncoding.EncodeToString([]byte("a\tb")) + " b\r\n", []string{"mg " + badFormat}},
	{"mg no key", "mg\r\n", []string{"mg " + badFormat}},
	{"mg key 251", "mg " + k251 + " v\r\n", []string{"mg " + badFormat}},
	{"mg bad T", "mg k Tx\r\n", []string{"mg !CLIENT_ERROR bad token in command line format"}},
	{"mg opaque 32", "mg k O" + strings.Repeat("1", 31) + "\r\n", []string{`mg k | key=k toks=["O` + strings.Repeat("1", 31) + `"] O="` + strings.Repeat("1", 31) + `"`}},
	{"mg opaque 33", "mg k O" + strings.Repeat("1", 32) + "\r\n", []string{"mg !CLIENT_ERROR opaque token too long"}},
	{"md", "md k C123 q\r\n", []string{`md k cas=123 | key=k toks=["C123" "q"] q C`}},
	{"md ignores T and v", "md k T30 v I\r\n", []string{`md k | key=k toks=["T30" "v" "I"]`}},
	{"md bad C", "md k C-1\r\n", []string{"md !CLIENT_ERROR bad token in command line format"}},
	{"ms", "ms k 5 F42 T-1 c MS q\r\nhello\r\n", []string{`ms k flags=42 exp=-1 data="hello" | key=k toks=["F42" "T-1" "c" "MS" "q"] q T MS`}},
	{"ms modes", "ms k 1 Me\r\nx\r\nms k 1 MP\r\ny\r\n", []string{`ms k data="x" | key=k toks=["Me"] ME`, `ms k data="y" | key=k toks=["MP"] MP`, "!EOF"}},
	{"ms C", "ms k 1 C99\r\nx\r\n", []string{`ms k cas=99 data="x" | key=k toks=["C99"] C`}},
	{"ms empty", "ms k 0\r\n\r\n", []string{`ms k data="" | key=k toks=[]`}},
	{"ms base64", "ms Zm9v 2 b\r\nhi\r\n", []string{`ms foo data="hi" | key=Zm9v toks=["b"] b`}},
	{"ms bad mode swallows", "ms k 3 MX\r\nabc\r\nmn\r\n", []string{"ms !CLIENT_ERROR invalid mode for ms M token", "mn", "!EOF"}},
	{"ms mode length", "ms k 3 MSS\r\nabc\r\nmn\r\n", []string{"ms !CLIENT_ERROR incorrect length for M token", "mn", "!EOF"}},
	{"ms bad F swallows", "ms k 3 F-1\r\nabc\r\nmn\r\n", []string{"ms " + badFormat, "mn", "!EOF"}},
	{"ms F 33 bits", "ms k 3 F4294967296\r\nabc\r\n", []string{"ms " + badFormat, "!EOF"}},
	{"ms bad key swallows", "ms " + k251 + " 3\r\nabc\r\nmn\r\n", []string{"ms " + badFormat, "mn", "!EOF"}},
	{"ms bad length", "ms k x\r\nabc\r\n", []string{"ms " + badFormat, "!ERROR", "!EOF"}},
	{"ms no length", "ms k\r\n", []string{"ms " + badFormat, "!EOF"}},
	{"ms too large", "ms k 1025 q\r\n" + strings.Repeat("v", 1025) + "\r\nmn\r\n", []string{"ms !TOO_LARGE", "mn", "!EOF"}},
	{"ms bad chunk", "ms k 3\r\nabcde\r\n", []string{"ms " + badChunk, "!ERROR", "!EOF"}},
	{"ms truncated", "ms k 3\r\nab", []string{"!mcproto: reading data block: unexpected EOF"}},
	{"mn", "mn\r\nmn extra\r\n", []string{"mn", "mn", "!EOF"}},
	{"meta is case-sensitive", "MG k\r\n", []string{"!ERROR", "!EOF"}},
}

func TestParseMeta(t *testing.T) {
	for _, tt := range metaTests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if last := want[len(want)-1]; !strings.HasPrefix(last, "!") || last == "!ERROR" {
				want = append(append([]string(nil), want...), "!EOF")
			}
			got := parseAllMeta(t, bufio.NewReaderSize(strings.NewReader(tt.input), 4096), testMaxItem)
			got[len(got)-1] = strings.Replace(got[len(got)-1], "!mcproto: reading command line: EOF", "!EOF", 1)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("\n got %q\nwant %q", got, want)
			}
			split := parseAllMeta(t, bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(tt.input)), 16), testMaxItem)
			split[len(split)-1] = strings.Replace(split[len(split)-1], "!mcproto: reading command line: EOF", "!EOF", 1)
			if strings.Join(split, "\n") != strings.Join(got, "\n") {
				t.Fatalf("byte-wise differs:\n got %q\nwhole %q", split, got)
			}
		})
	}
}

func TestParseMetaNoAllocs(t *testing.T) {
	checkNoAllocs(t, []string{
		"mg jobs v f k c O123 q\r\n",
		"mg Zm9v b v\r\n",
		"ms jobs 5 F1 T30 MS c\r\nhello\r\n",
		"md jobs C12345 q\r\n",
		"mn\r\n",
		"mg jobs Tx\r\n",
	}, parserNext)
}

func TestMetaWriter(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	w := NewWriter(bw)
	key, data := []byte("k"), []byte("hello")
	write := func() {
		w.MetaValue(len(data))
		w.MetaFlagUint('c', 123)
		w.MetaFlagInt('t', -1)
		w.MetaFlagBytes('k', key)
		w.MetaFlag('b')
		w.MetaEnd()
		w.MetaData(data)
		w.MetaCode(MetaMiss)
		w.MetaEnd()
		w.MetaNoop()
	}
	write()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if want := "VA 5 c123 t-1 kk b\r\nhello\r\nEN\r\nMN\r\n"; buf.String() != want {
		t.Fatalf("got %q want %q", buf.String(), want)
	}
	if n := testing.AllocsPerRun(100, func() { write(); _ = w.Flush() }); n != 0 {
		t.Errorf("%v allocs", n)
	}
}

func TestOpMeta(t *testing.T) {
	for o, want := range map[Op]bool{OpMetaGet: true, OpMetaSet: true, OpMetaDelete: true, OpMetaNoop: true, OpGet: false, OpFlushAll: false} {
		if o.IsMeta() != want {
			t.Errorf("%v.IsMeta() = %v", o, !want)
		}
	}
	if !OpMetaSet.IsStorage() || OpMetaGet.IsStorage() || OpMetaGet.IsRetrieval() {
		t.Error("meta ops classified wrong")
	}
}
