package mcproto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

const testMaxItem = 1024

// describe renders one result of Next compactly, so that table rows and split-read runs can be
// compared as strings.
func describe(c *Command, err error) string {
	var b strings.Builder
	if c != nil {
		b.WriteString(c.Op.String())
		if err == nil {
			if len(c.Keys) > 4 {
				fmt.Fprintf(&b, " keys=%d", len(c.Keys))
			} else {
				for _, k := range c.Keys {
					fmt.Fprintf(&b, " %s", k)
				}
			}
			if c.Flags != 0 {
				fmt.Fprintf(&b, " flags=%d", c.Flags)
			}
			if c.Exptime != 0 {
				fmt.Fprintf(&b, " exp=%d", c.Exptime)
			}
			if c.Cas != 0 {
				fmt.Fprintf(&b, " cas=%d", c.Cas)
			}
			if c.Delta != 0 {
				fmt.Fprintf(&b, " delta=%d", c.Delta)
			}
			for _, a := range c.Args {
				if len(a) > 16 {
					fmt.Fprintf(&b, " arg=<%d bytes>", len(a))
				} else {
					fmt.Fprintf(&b, " arg=%s", a)
				}
			}
			if c.Data != nil {
				fmt.Fprintf(&b, " data=%q", c.Data)
			}
		}
		if c.Noreply {
			b.WriteString(" noreply")
		}
		if err != nil {
			b.WriteString(" ")
		}
	}
	var ce *ClientError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		b.WriteString("!" + ce.Error())
	case err == ErrTooLarge:
		b.WriteString("!TOO_LARGE")
	case err == ErrUnknownCommand:
		b.WriteString("!ERROR")
	default:
		b.WriteString("!" + err.Error())
	}
	return b.String()
}

// terminal reports whether err ends the connection (or the input).
func terminal(err error) bool {
	if err == nil || err == ErrTooLarge || err == ErrUnknownCommand {
		return false
	}
	var ce *ClientError
	return !errors.As(err, &ce)
}

// parseAll runs a parser over r until a terminal error and returns the transcript and that error.
func parseAll(t testing.TB, r io.Reader, bufSize, maxItem int) ([]string, error) {
	p := NewParser(bufio.NewReaderSize(r, bufSize), maxItem)
	var got []string
	for i := 0; ; i++ {
		if i > 1<<20 {
			t.Fatal("parser makes no progress")
		}
		c, err := p.Next()
		if terminal(err) {
			if c != nil {
				t.Errorf("Command %v returned with terminal error %v", c, err)
			}
			return got, err
		}
		if c == nil && err != ErrUnknownCommand {
			t.Fatalf("nil Command with %v", err)
		}
		got = append(got, describe(c, err))
	}
}

// longLine builds a line of exactly n bytes (terminator not counted) that starts with prefix
// and continues with space-separated keys of at most 250 bytes.
func longLine(prefix string, n int) string {
	var b strings.Builder
	b.WriteString(prefix)
	for b.Len() < n {
		left := n - b.Len() - 1
		b.WriteByte(' ')
		if left > MaxKeyLen {
			left = MaxKeyLen
		}
		b.WriteString(strings.Repeat("k", left))
	}
	return b.String()
}

type parseTest struct {
	name    string
	input   string
	maxItem int      // 0: testMaxItem
	want    []string // one describe() per result of Next before the terminal error
	wantErr error    // the terminal error; nil means io.EOF
}

var (
	k250 = strings.Repeat("k", 250)
	k251 = strings.Repeat("k", 251)
)

const (
	badFormat = "!CLIENT_ERROR bad command line format"
	badChunk  = "!CLIENT_ERROR bad data chunk"
	usage     = "!CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
	badDelta  = "!CLIENT_ERROR invalid numeric delta argument"
	badExp    = "!CLIENT_ERROR invalid exptime argument"
)

var parseTests = []parseTest{
	// Retrieval.
	{name: "get", input: "get jobs\r\n", want: []string{"get jobs"}},
	{name: "get multi", input: "get a b/open c\r\n", want: []string{"get a b/open c"}},
	{name: "gets", input: "gets q/close/open\r\n", want: []string{"gets q/close/open"}},
	{name: "gat", input: "gat 30 a b\r\n", want: []string{"gat a b exp=30"}},
	{name: "gats negative", input: "gats -1 a\r\n", want: []string{"gats a exp=-1"}},
	{name: "extra spaces", input: "  get   a  b  \r\n", want: []string{"get a b"}},
	{name: "bare LF", input: "get a\nget b\n", want: []string{"get a", "get b"}},
	{name: "key 250", input: "get " + k250 + "\r\n", want: []string{"get " + k250}},
	{name: "get key 251", input: "get a " + k251 + "\r\nversion\r\n", want: []string{"get " + badFormat, "version"}},
	{name: "get control char", input: "get a\tb\r\n", want: []string{"get " + badFormat}},
	{name: "get DEL", input: "get a\x7fb\r\n", want: []string{"get " + badFormat}},
	{name: "get NUL", input: "get a\x00\r\n", want: []string{"get " + badFormat}},
	{name: "get inner CR", input: "get a\rb\r\n", want: []string{"get " + badFormat}},
	{name: "get CR CR LF", input: "get a\r\r\n", want: []string{"get " + badFormat}},
	{name: "get no key", input: "get\r\nget \r\n", want: []string{"get " + badFormat, "get " + badFormat}},
	{name: "gat no key", input: "gat 10\r\n", want: []string{"gat " + badFormat}},
	{name: "gat bad exptime", input: "gat x a\r\n", want: []string{"gat " + badExp}},
	{name: "gat exptime overflow", input: "gat 9223372036854775808 a\r\n", want: []string{"gat " + badExp}},
	{name: "gat exptime min", input: "gat -9223372036854775808 a\r\n", want: []string{"gat a exp=-9223372036854775808"}},
	{name: "get noreply is a key", input: "get noreply\r\n", want: []string{"get noreply"}},

	// Storage.
	{name: "set", input: "set k 5 -1 5\r\nhello\r\n", want: []string{`set k flags=5 exp=-1 data="hello"`}},
	{name: "set noreply", input: "set k 0 0 5 noreply\r\nhello\r\n", want: []string{`set k data="hello" noreply`}},
	{name: "set empty", input: "set k 0 0 0\r\n\r\n", want: []string{`set k data=""`}},
	{name: "set data with CRLF inside", input: "set k 0 0 4\r\n\r\n\r\n\r\n", want: []string{`set k data="\r\n\r\n"`}},
	{name: "set bare LF line", input: "set k 0 0 5\nhello\r\n", want: []string{`set k data="hello"`}},
	{name: "set max flags", input: "set k 4294967295 0 1\r\nx\r\n", want: []string{`set k flags=4294967295 data="x"`}},
	{name: "set key 250", input: "set " + k250 + " 0 0 1\r\nx\r\n", want: []string{"set " + k250 + ` data="x"`}},
	{name: "set exactly max item", input: "set k 0 0 1024\r\n" + strings.Repeat("v", 1024) + "\r\n", want: []string{`set k data="` + strings.Repeat("v", 1024) + `"`}},
	{name: "cas", input: "cas k 1 2 3 42\r\nabc\r\n", want: []string{`cas k flags=1 exp=2 cas=42 data="abc"`}},
	{name: "cas noreply", input: "cas k 0 0 1 18446744073709551615 noreply\r\nx\r\n", want: []string{`cas k cas=18446744073709551615 data="x" noreply`}},
	{name: "add", input: "add k 0 0 1\r\nx\r\n", want: []string{`add k data="x"`}},
	{name: "replace", input: "replace k 0 0 1\r\nx\r\n", want: []string{`replace k data="x"`}},
	{name: "append", input: "append k 0 0 1\r\nx\r\n", want: []string{`append k data="x"`}},
	{name: "prepend", input: "prepend k 0 0 1 noreply\r\nx\r\n", want: []string{`prepend k data="x" noreply`}},

	// Storage, malformed: the block is swallowed whenever the byte count is readable.
	{name: "set flags not numeric", input: "set k x 0 5\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set flags over uint32", input: "set k 4294967296 0 5\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set flags negative", input: "set k -1 0 5\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set exptime not numeric", input: "set k 0 1s 5\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set bad noreply token", input: "set k 0 0 5 norply\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set key 251", input: "set " + k251 + " 0 0 5\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set key control char", input: "set k\x01 0 0 5\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set bad key noreply", input: "set " + k251 + " 0 0 5 noreply\r\nhello\r\nversion\r\n", want: []string{"set noreply " + badFormat, "version"}},
	{name: "cas bad unique", input: "cas k 0 0 5 x\r\nhello\r\nversion\r\n", want: []string{"cas " + badFormat, "version"}},
	{name: "cas unique overflow", input: "cas k 0 0 5 18446744073709551616\r\nhello\r\nversion\r\n", want: []string{"cas " + badFormat, "version"}},
	// Byte count unknown: nothing is swallowed, the block is read as a command, like memcached.
	{name: "set negative bytes", input: "set k 0 0 -1\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "!ERROR", "version"}},
	{name: "set bytes not numeric", input: "set k 0 0 five\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set bytes plus sign", input: "set k 0 0 +5\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set bytes over INT_MAX-2", input: "set k 0 0 2147483646\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set missing bytes", input: "set k 0 0\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "set missing all", input: "set\r\nset k\r\n", want: []string{"set " + badFormat, "set " + badFormat}},
	{name: "set too many args", input: "set k 0 0 5 noreply extra\r\nhello\r\nversion\r\n", want: []string{"set " + badFormat, "!ERROR", "version"}},
	{name: "cas missing unique", input: "cas k 0 0 5\r\nhello\r\n", want: []string{"cas " + badFormat, "!ERROR"}},

	// Data block framing.
	{name: "bad data chunk then sync", input: "set k 0 0 5\r\nhelloXX\r\nversion\r\n", want: []string{"set " + badChunk, "!ERROR", "version"}},
	{name: "data chunk LF only", input: "set k 0 0 5\r\nhello\nXversion\r\n", want: []string{"set " + badChunk, "version"}},
	{name: "bad data chunk noreply", input: "set k 0 0 1 noreply\r\nxyz\r\nget k\r\n", want: []string{"set noreply " + badChunk, "!ERROR", "get k"}},
	{name: "too large then sync", input: "set k 0 0 1025\r\n" + strings.Repeat("v", 1025) + "\r\nget k\r\n", want: []string{"set !TOO_LARGE", "get k"}},
	{name: "too large noreply", input: "set k 0 0 1025 noreply\r\n" + strings.Repeat("v", 1025) + "\r\nversion\r\n", want: []string{"set noreply !TOO_LARGE", "version"}},
	{name: "too large small max", maxItem: 4, input: "set k 0 0 5\r\nhello\r\nset k 0 0 4\r\nhell\r\n", want: []string{"set !TOO_LARGE", `set k data="hell"`}},
	{name: "too large and bad key", input: "set " + k251 + " 0 0 1025\r\n" + strings.Repeat("v", 1025) + "\r\nversion\r\n", want: []string{"set " + badFormat, "version"}},
	{name: "eof in data", input: "set k 0 0 5\r\nhel", wantErr: io.ErrUnexpectedEOF},
	{name: "eof before data CRLF", input: "set k 0 0 5\r\nhello", wantErr: io.ErrUnexpectedEOF},
	{name: "eof in swallowed block", input: "set k 0 0 2000\r\nabc", wantErr: io.ErrUnexpectedEOF},
	{name: "eof in line", input: "get k", wantErr: io.ErrUnexpectedEOF},
	{name: "eof after CR", input: "get k\r", wantErr: io.ErrUnexpectedEOF},

	// Arithmetic, delete, touch.
	{name: "incr", input: "incr k 5\r\n", want: []string{"incr k delta=5"}},
	{name: "decr noreply", input: "decr k 18446744073709551615 noreply\r\n", want: []string{"decr k delta=18446744073709551615 noreply"}},
	{name: "incr bad delta", input: "incr k -1\r\nincr k x noreply\r\n", want: []string{"incr " + badDelta, "incr noreply " + badDelta}},
	{name: "incr delta overflow", input: "incr k 18446744073709551616\r\n", want: []string{"incr " + badDelta}},
	{name: "incr missing delta", input: "incr k\r\n", want: []string{"incr " + badFormat}},
	{name: "incr bad noreply", input: "incr k 1 foo\r\n", want: []string{"incr " + badFormat}},
	{name: "incr key 251", input: "incr " + k251 + " 1\r\n", want: []string{"incr " + badFormat}},
	{name: "delete", input: "delete k\r\n", want: []string{"delete k"}},
	{name: "delete 0", input: "delete k 0\r\n", want: []string{"delete k"}},
	{name: "delete noreply", input: "delete k noreply\r\n", want: []string{"delete k noreply"}},
	{name: "delete 0 noreply", input: "delete k 0 noreply\r\n", want: []string{"delete k noreply"}},
	{name: "delete time", input: "delete k 5\r\n", want: []string{"delete " + usage}},
	{name: "delete 0 junk", input: "delete k 0 foo\r\n", want: []string{"delete " + usage}},
	{name: "delete noreply noreply", input: "delete k noreply noreply\r\n", want: []string{"delete noreply " + usage}},
	{name: "delete too many", input: "delete k 0 noreply x\r\n", want: []string{"delete " + badFormat}},
	{name: "delete no key", input: "delete\r\n", want: []string{"delete " + badFormat}},
	{name: "delete key 251", input: "delete " + k251 + "\r\n", want: []string{"delete " + badFormat}},
	{name: "touch", input: "touch k 10\r\n", want: []string{"touch k exp=10"}},
	{name: "touch negative noreply", input: "touch k -1 noreply\r\n", want: []string{"touch k exp=-1 noreply"}},
	{name: "touch bad exptime", input: "touch k x\r\n", want: []string{"touch " + badExp}},
	{name: "touch missing", input: "touch k\r\n", want: []string{"touch " + badFormat}},
	{name: "touch bad noreply", input: "touch k 1 x\r\n", want: []string{"touch " + badFormat}},

	// The rest.
	{name: "stats", input: "stats\r\n", want: []string{"stats"}},
	{name: "stats queue", input: "stats queue\r\n", want: []string{"stats arg=queue"}},
	{name: "stats settings", input: "stats settings\r\n", want: []string{"stats arg=settings"}},
	{name: "version", input: "version\r\n", want: []string{"version"}},
	{name: "version extra", input: "version now\r\n", want: []string{"version " + badFormat}},
	{name: "quit", input: "quit\r\n", want: []string{"quit"}},
	{name: "quit extra", input: "quit now\r\n", want: []string{"quit"}},
	{name: "verbosity", input: "verbosity 1\r\n", want: []string{"verbosity arg=1"}},
	{name: "verbosity noreply", input: "verbosity 1 noreply\r\n", want: []string{"verbosity arg=1 noreply"}},
	{name: "verbosity bad", input: "verbosity x\r\n", want: []string{"verbosity " + badFormat}},
	{name: "verbosity missing", input: "verbosity\r\n", want: []string{"verbosity " + badFormat}},
	{name: "verbosity two levels", input: "verbosity 1 2\r\n", want: []string{"verbosity " + badFormat}},
	{name: "flush_all", input: "flush_all\r\n", want: []string{"flush_all"}},
	{name: "flush_all delay", input: "flush_all 10\r\n", want: []string{"flush_all arg=10"}},
	{name: "flush_all negative", input: "flush_all -1\r\n", want: []string{"flush_all arg=-1"}},
	{name: "flush_all noreply", input: "flush_all noreply\r\n", want: []string{"flush_all noreply"}},
	{name: "flush_all delay noreply", input: "flush_all 0 noreply\r\n", want: []string{"flush_all arg=0 noreply"}},
	{name: "flush_all bad delay", input: "flush_all x\r\n", want: []string{"flush_all " + badExp}},
	{name: "flush_all too many", input: "flush_all 1 2\r\n", want: []string{"flush_all " + badFormat}},

	// Unknown commands and empty lines.
	{name: "empty line", input: "\r\nversion\r\n", want: []string{"!ERROR", "version"}},
	{name: "empty LF", input: "\n", want: []string{"!ERROR"}},
	{name: "spaces only", input: "   \r\n", want: []string{"!ERROR"}},
	{name: "uppercase", input: "GET k\r\n", want: []string{"!ERROR"}},
	{name: "unknown", input: "foo bar\r\nversion\r\n", want: []string{"!ERROR", "version"}},
	{name: "tab separated", input: "get\tk\r\n", want: []string{"!ERROR"}},
	{name: "nothing", input: ""},

	// Pipelining.
	{
		name:  "pipelined",
		input: "get a\r\nset b 0 0 1\r\nx\r\ngets b c\nbogus\r\ndelete b noreply\r\nset c 0 0 2 noreply\r\nyz\r\nversion\r\nquit\r\n",
		want:  []string{"get a", `set b data="x"`, "gets b c", "!ERROR", "delete b noreply", `set c data="yz" noreply`, "version", "quit"},
	},

	// Line limits.
	{name: "line 2048", input: "stats " + strings.Repeat("a", 2042) + "\r\nversion\r\n", want: []string{"stats arg=<2042 bytes>", "version"}},
	{name: "line 2048 LF", input: "stats " + strings.Repeat("a", 2042) + "\nversion\r\n", want: []string{"stats arg=<2042 bytes>", "version"}},
	{name: "line 2049", input: longLine("stats", 2049) + "\r\nversion\r\n", wantErr: ErrLineTooLong},
	{name: "line 2049 LF", input: longLine("stats", 2049) + "\n", wantErr: ErrLineTooLong},
	{name: "line 2049 no LF", input: longLine("stats", 2049), wantErr: ErrLineTooLong},
	{name: "unknown 2049", input: strings.Repeat("x", 2049) + "\r\n", wantErr: ErrLineTooLong},
	{name: "set line 2049", input: longLine("set", 2049) + "\r\n", wantErr: ErrLineTooLong},
	{name: "line 2048 then eof", input: longLine("stats", 2048), wantErr: io.ErrUnexpectedEOF},
	{name: "line 2048 CR then eof", input: longLine("stats", 2048) + "\r", wantErr: io.ErrUnexpectedEOF},
	{name: "get 2049", input: longLine("get", 2049) + "\r\nversion\r\n", want: []string{"get keys=9", "version"}},
	{name: "get 3000", input: longLine("get", 3000) + "\r\n", want: []string{"get keys=12"}},
	{name: "gets 3000", input: longLine("gets", 3000) + "\r\n", want: []string{"gets keys=12"}},
	{name: "gat 3000", input: longLine("gat 0", 3000) + "\r\n", want: []string{"gat keys=12"}},
	{name: "gats 3000 leading spaces", input: "  " + longLine("gats 0", 3000) + "\r\n", want: []string{"gats keys=12"}},
	{name: "get 64KiB", input: longLine("get", 65536) + "\r\nversion\r\n", want: []string{"get keys=262", "version"}},
	{name: "get 64KiB LF", input: longLine("get", 65536) + "\n", want: []string{"get keys=262"}},
	{name: "get 64KiB+1", input: longLine("get", 65537) + "\r\n", wantErr: ErrLineTooLong},
	{name: "get 64KiB+1 no LF", input: longLine("get", 65537), wantErr: ErrLineTooLong},
	{name: "get word without key", input: "get" + strings.Repeat(" ", 2100) + "\r\n", want: []string{"get " + badFormat}},
	{name: "getx 3000", input: longLine("getx", 3000) + "\r\n", wantErr: ErrLineTooLong},
}

func checkTranscript(t *testing.T, how string, tt parseTest, got []string, err error) {
	t.Helper()
	wantErr := tt.wantErr
	if wantErr == nil {
		wantErr = io.EOF
	}
	if !errors.Is(err, wantErr) {
		t.Errorf("%s: terminal error = %v, want %v", how, err, wantErr)
	}
	if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
		t.Errorf("%s:\n got %q\nwant %q", how, got, tt.want)
	}
}

func (tt parseTest) max() int {
	if tt.maxItem == 0 {
		return testMaxItem
	}
	return tt.maxItem
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAll(t, strings.NewReader(tt.input), 4096, tt.max())
			checkTranscript(t, "whole", tt, got, err)
		})
	}
}

// TestParseSplitReads feeds every input in pieces: a command split across reads must parse as it
// does whole, whatever the reader's buffer size.
func TestParseSplitReads(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				got, err := parseAll(t, iotest.OneByteReader(strings.NewReader(tt.input)), size, tt.max())
				checkTranscript(t, fmt.Sprintf("one byte at a time, buffer %d", size), tt, got, err)

				got, err = parseAll(t, iotest.DataErrReader(strings.NewReader(tt.input)), size, tt.max())
				checkTranscript(t, fmt.Sprintf("data with EOF, buffer %d", size), tt, got, err)

				step := 1
				if len(tt.input) > 8192 {
					step = 2039 // keep the 64 KiB rows fast; the small rows cover every position
				}
				for i := 0; i <= len(tt.input); i += step {
					r := io.MultiReader(strings.NewReader(tt.input[:i]), strings.NewReader(tt.input[i:]))
					got, err := parseAll(t, r, size, tt.max())
					checkTranscript(t, fmt.Sprintf("split at %d, buffer %d", i, size), tt, got, err)
				}
			}
		})
	}
}

// TestCommandFieldsReset checks that nothing of one command leaks into the next.
func TestCommandFieldsReset(t *testing.T) {
	in := "cas k 1 2 3 4 noreply\r\nabc\r\nincr k 5\r\nget a\r\n"
	p := NewParser(bufio.NewReader(strings.NewReader(in)), 0)
	for _, want := range []string{`cas k flags=1 exp=2 cas=4 data="abc" noreply`, "incr k delta=5", "get a"} {
		c, err := p.Next()
		if got := describe(c, err); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// TestCommandSurvivesReaderUse checks the line is owned by the parser: the caller may use the
// reader (peek for more pipelined input) while it handles a command.
func TestCommandSurvivesReaderUse(t *testing.T) {
	pr, pw := io.Pipe()
	br := bufio.NewReaderSize(pr, 16)
	p := NewParser(br, 0)
	go func() {
		pw.Write([]byte("get abcdefghij\r\n"))
		pw.Write([]byte("XXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n"))
		pw.Close()
	}()
	c, err := p.Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := br.Peek(8); err != nil {
		t.Fatal(err)
	}
	if got := string(c.Keys[0]); got != "abcdefghij" {
		t.Errorf("key = %q after the caller peeked", got)
	}
	if got := string(p.Line()); got != "get abcdefghij" {
		t.Errorf("Line() = %q", got)
	}
	if p.Offset() != 16 {
		t.Errorf("Offset() = %d, want 16", p.Offset())
	}
}

// errReader fails with its error once its data is gone, as a net.Conn with a deadline does.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(b []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(b, r.data)
	r.data = r.data[n:]
	return n, nil
}

type timeoutError struct{}

func (timeoutError) Error() string { return "i/o timeout" }
func (timeoutError) Timeout() bool { return true }

func TestParseReaderErrorsWrapped(t *testing.T) {
	for _, in := range []string{"", "get a", "set k 0 0 5\r\nhe"} {
		p := NewParser(bufio.NewReader(&errReader{data: []byte(in), err: timeoutError{}}), 0)
		_, err := p.Next()
		var te timeoutError
		if !errors.As(err, &te) {
			t.Errorf("%q: error %v does not wrap the reader's error", in, err)
		}
	}
	_, err := NewParser(bufio.NewReader(strings.NewReader("")), 0).Next()
	if !errors.Is(err, io.EOF) {
		t.Errorf("clean close: %v, want io.EOF", err)
	}
}

// TestLineTooLongStopsReading checks the parser answers a line over the limit without waiting for
// its end and without buffering past the limit.
func TestLineTooLongStopsReading(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte(strings.Repeat("x", 2049))) // and then the client waits
	p := NewParser(bufio.NewReaderSize(pr, 4096), 0)
	if _, err := p.Next(); err != ErrLineTooLong {
		t.Fatalf("err = %v, want ErrLineTooLong", err)
	}
	if cap(p.line) > MaxLineLen+2 {
		t.Errorf("line buffer grew to %d", cap(p.line))
	}
}

// TestTooLargeDoesNotAllocate checks that a value over the limit is skipped without a buffer of
// its size.
func TestTooLargeDoesNotAllocate(t *testing.T) {
	value := strings.Repeat("v", 10<<20)
	in := "set k 0 0 " + fmt.Sprint(len(value)) + "\r\n" + value + "\r\nversion\r\n"
	p := NewParser(bufio.NewReader(strings.NewReader(in)), 1<<20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c, err := p.Next()
	runtime.ReadMemStats(&after)
	if err != ErrTooLarge || c == nil || c.Op != OpSet {
		t.Fatalf("got %v, %v", c, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Errorf("%d bytes allocated to skip a %d-byte value", n, len(value))
	}
	if cap(p.data) != 0 {
		t.Errorf("data buffer of %d bytes for a skipped value", cap(p.data))
	}
	if c, err := p.Next(); err != nil || c.Op != OpVersion {
		t.Errorf("after the skipped value: %v, %v", c, err)
	}
}

// TestBuffersReleased checks that one big command does not leave its buffers on an idle
// connection.
func TestBuffersReleased(t *testing.T) {
	value := strings.Repeat("v", 100<<10)
	in := longLine("get", 60000) + "\r\nset k 0 0 " + fmt.Sprint(len(value)) + "\r\n" + value + "\r\nget a\r\n"
	p := NewParser(bufio.NewReader(strings.NewReader(in)), 1<<20)
	for i := 0; i < 3; i++ {
		if _, err := p.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if cap(p.line) > retainLine || cap(p.data) > retainData || cap(p.toks) > retainTokens {
		t.Errorf("buffers kept: line %d, data %d, tokens %d", cap(p.line), cap(p.data), cap(p.toks))
	}
}

// cycleReader returns its data over and over, for steady-state allocation checks.
type cycleReader struct {
	data []byte
	off  int
}

func (r *cycleReader) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		c := copy(b[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func TestParseNoAllocs(t *testing.T) {
	checkNoAllocs(t, []string{
		"get jobs/open\r\n",
		"gets a b c d e f\r\n",
		"set jobs 0 0 256\r\n" + strings.Repeat("v", 256) + "\r\n",
		"delete jobs\r\n",
		"bogus\r\n",
		"set jobs 0 x 5\r\nhello\r\n",
	}, parserNext)
}

// checkNoAllocs reads each input, repeated without end, with the reader
// start makes, and fails if a read allocates once warmed up.
func checkNoAllocs(t *testing.T, inputs []string, start func(*bufio.Reader) (next func())) {
	t.Helper()
	for _, in := range inputs {
		next := start(bufio.NewReaderSize(&cycleReader{data: []byte(in)}, 4096))
		for range 10 {
			next()
		}
		if n := testing.AllocsPerRun(1000, next); n != 0 {
			t.Errorf("%q: %v allocs per read, want 0", in, n)
		}
	}
}

func parserNext(r *bufio.Reader) func() {
	p := NewParser(r, 0)
	return func() { p.Next() }
}

func TestOpString(t *testing.T) {
	for o := OpUnknown; o < numOps; o++ {
		if o != OpUnknown && o != OpNoop && lookupOp([]byte(o.String())) != o {
			t.Errorf("%d: String %q does not parse back", o, o.String())
		}
	}
	if lookupOp([]byte("noop")) != OpUnknown {
		t.Error(`"noop" parses as a text command; memcached has none`)
	}
	if Op(200).String() != "unknown" {
		t.Errorf("out of range Op: %q", Op(200).String())
	}
	for o, want := range map[Op]bool{OpGet: true, OpGets: true, OpGat: true, OpGats: true, OpSet: false, OpDelete: false} {
		if o.IsRetrieval() != want {
			t.Errorf("%v.IsRetrieval() = %v", o, !want)
		}
	}
	for o, want := range map[Op]bool{OpSet: true, OpCas: true, OpPrepend: true, OpGats: false, OpIncr: false} {
		if o.IsStorage() != want {
			t.Errorf("%v.IsStorage() = %v", o, !want)
		}
	}
}

func TestParseNumbers(t *testing.T) {
	tests := []struct {
		in      string
		max     uint64
		want    uint64
		wantErr bool
	}{
		{"0", 10, 0, false},
		{"007", 10, 7, false},
		{"10", 10, 10, false},
		{"11", 10, 0, true},
		{"", 10, 0, true},
		{"-1", 10, 0, true},
		{"18446744073709551615", 1<<64 - 1, 1<<64 - 1, false},
		{"18446744073709551616", 1<<64 - 1, 0, true},
		{"99999999999999999999", 1<<64 - 1, 0, true},
		{"4294967295", 1<<32 - 1, 1<<32 - 1, false},
		{"4294967296", 1<<32 - 1, 0, true},
		{"1a", 100, 0, true},
	}
	for _, tt := range tests {
		got, ok := parseUint([]byte(tt.in), tt.max)
		if ok == tt.wantErr || got != tt.want {
			t.Errorf("parseUint(%q, %d) = %d, %v", tt.in, tt.max, got, ok)
		}
	}
	for in, want := range map[string]int64{"-0": 0, "-5": -5, "9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63} {
		if got, ok := parseInt([]byte(in)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"-", "", "--1", "+1", "9223372036854775808", "-9223372036854775809", " 1"} {
		if _, ok := parseInt([]byte(in)); ok {
			t.Errorf("parseInt(%q) accepted", in)
		}
	}
}

func TestSnippet(t *testing.T) {
	if got := Snippet([]byte("get a\x00")); got != `"get a\x00"` {
		t.Errorf("short: %s", got)
	}
	if got := Snippet(bytes.Repeat([]byte("x"), 100)); got != `"`+strings.Repeat("x", 64)+`"...` {
		t.Errorf("long: %s", got)
	}
}
