package mcproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/mcbridge/mcbridge/internal/mctest"
)

// frame builds a binary message byte by byte.
func frame(magic byte, op BinOpcode, status uint16, opaque uint32, cas uint64, extras, key, value string) string {
	return mctest.BinFrame(magic, byte(op), status, opaque, cas, extras, key, value)
}

func req(op BinOpcode, opaque uint32, cas uint64, extras, key, value string) string {
	return frame(BinaryRequestMagic, op, 0, opaque, cas, extras, key, value)
}

func u32s(v ...uint32) string {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint32(b, x)
	}
	return string(b)
}

// withBodyLen rewrites a request's total body length field.
func withBodyLen(s string, n uint32) string {
	b := []byte(s)
	binary.BigEndian.PutUint32(b[8:], n)
	return string(b)
}

// describeBin renders one result of BinaryReader.Next.
func describeBin(r *BinaryRequest, err error) string {
	var b strings.Builder
	if r != nil {
		fmt.Fprintf(&b, "%s o=%d", r.Opcode, r.Opaque)
		if err == nil {
			if r.Cas != 0 {
				fmt.Fprintf(&b, " cas=%d", r.Cas)
			}
			if len(r.Key) > 0 {
				fmt.Fprintf(&b, " key=%s", r.Key)
			}
			if r.Flags != 0 || r.Exptime != 0 {
				fmt.Fprintf(&b, " flags=%d exp=%d", r.Flags, r.Exptime)
			}
			if len(r.Value) > 0 {
				fmt.Fprintf(&b, " value=%q", r.Value)
			}
		}
	}
	if err != nil {
		if r != nil {
			b.WriteString(" ")
		}
		switch {
		case errors.Is(err, ErrTooLarge):
			b.WriteString("!TOO_LARGE")
		case errors.Is(err, ErrBinaryInvalid):
			b.WriteString("!INVALID")
		case errors.Is(err, ErrBinaryBodyTooLong):
			b.WriteString("!BODY_TOO_LONG")
		case errors.Is(err, ErrBadMagic):
			b.WriteString("!BAD_MAGIC")
		case errors.Is(err, io.ErrUnexpectedEOF):
			b.WriteString("!UNEXPECTED_EOF")
		case errors.Is(err, io.EOF):
			b.WriteString("!EOF")
		default:
			b.WriteString("!" + err.Error())
		}
	}
	return b.String()
}

// binTerminal: errors after which the stream is out of step.
func binTerminal(err error) bool {
	return err != nil && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrBinaryInvalid)
}

func readAllBin(t testing.TB, r *bufio.Reader, maxItem int) []string {
	br := NewBinaryReader(r, maxItem)
	var out []string
	for i := 0; ; i++ {
		if i > 1<<16 {
			t.Fatal("no progress")
		}
		rq, err := br.Next()
		out = append(out, describeBin(rq, err))
		if binTerminal(err) {
			return out
		}
		if err == nil {
			checkBinRequest(t, rq, maxItem)
		}
	}
}

// checkBinRequest checks the reader's promises about an accepted request.
func checkBinRequest(t testing.TB, r *BinaryRequest, maxItem int) {
	t.Helper()
	if len(r.Key) > MaxKeyLen || (len(r.Key) > 0 && !validKey(r.Key)) {
		t.Fatalf("invalid key %q accepted", r.Key)
	}
	if len(r.Value) > maxItem+maxBinaryOverhead {
		t.Fatalf("%d-byte value over the limit", len(r.Value))
	}
	switch r.Opcode {
	case BinGet, BinGetQ, BinGetK, BinGetKQ, BinDelete, BinDeleteQ, BinTouch, BinGAT, BinGATQ, BinGATK, BinGATKQ:
		if len(r.Key) == 0 || len(r.Value) != 0 {
			t.Fatalf("%v with key %q value %q", r.Opcode, r.Key, r.Value)
		}
	case BinSet, BinSetQ:
		if len(r.Key) == 0 || len(r.Extras) != 8 || len(r.Value) > maxItem {
			t.Fatalf("set with key %q extras %d value %d", r.Key, len(r.Extras), len(r.Value))
		}
	case BinNoop, BinVersion, BinQuit, BinQuitQ:
		if len(r.Key)+len(r.Extras)+len(r.Value) != 0 {
			t.Fatalf("%v with a body", r.Opcode)
		}
	}
}

const binTestMaxItem = 64

var binTests = []struct {
	name  string
	input string
	want  []string
}{
	{"get", req(BinGet, 7, 0, "", "jobs", ""), []string{"get o=7 key=jobs", "!EOF"}},
	{"getkq with options", req(BinGetKQ, 1, 0, "", "q/close/open", ""), []string{"getkq o=1 key=q/close/open", "!EOF"}},
	{"set", req(BinSet, 2, 0, u32s(42, 30), "k", "hello"), []string{`set o=2 key=k flags=42 exp=30 value="hello"`, "!EOF"}},
	{"set max exptime", req(BinSetQ, 2, 0, u32s(0xffffffff, 0xffffffff), "k", ""), []string{"setq o=2 key=k flags=4294967295 exp=4294967295", "!EOF"}},
	{"set at limit", req(BinSet, 3, 0, u32s(0, 0), "k", strings.Repeat("v", 64)), []string{`set o=3 key=k value="` + strings.Repeat("v", 64) + `"`, "!EOF"}},
	{"set too large then get", req(BinSet, 3, 0, u32s(0, 0), "k", strings.Repeat("v", 65)) + req(BinGet, 4, 0, "", "k", ""),
		[]string{"set o=3 !TOO_LARGE", "get o=4 key=k", "!EOF"}},
	{"huge set swallowed", req(BinAppendQ, 3, 0, "", "k", strings.Repeat("v", 5000)) + req(BinNoop, 4, 0, "", "", ""),
		[]string{"appendq o=3 !TOO_LARGE", "noop o=4", "!EOF"}},
	{"delete with cas", req(BinDelete, 5, 99, "", "k", ""), []string{"delete o=5 cas=99 key=k", "!EOF"}},
	{"touch", req(BinTouch, 6, 0, u32s(10), "k", ""), []string{"touch o=6 key=k flags=0 exp=10", "!EOF"}},
	{"gatk", req(BinGATK, 6, 0, u32s(10), "k", ""), []string{"gatk o=6 key=k flags=0 exp=10", "!EOF"}},
	{"flush with delay", req(BinFlushQ, 8, 0, u32s(5), "", ""), []string{"flushq o=8 flags=0 exp=5", "!EOF"}},
	{"noop version quit", req(BinNoop, 1, 0, "", "", "") + req(BinVersion, 2, 0, "", "", "") + req(BinQuit, 3, 0, "", "", ""),
		[]string{"noop o=1", "version o=2", "quit o=3", "!EOF"}},
	{"stat group", req(BinStat, 1, 0, "", "settings", ""), []string{"stat o=1 key=settings", "!EOF"}},
	{"unknown opcode body", req(0x77, 1, 0, "ex", "", "junk") + req(BinNoop, 2, 0, "", "", ""), []string{`unknown o=1 value="junk"`, "noop o=2", "!EOF"}},
	{"get with value", req(BinGet, 1, 0, "", "k", "v") + req(BinNoop, 2, 0, "", "", ""), []string{"get o=1 !INVALID", "noop o=2", "!EOF"}},
	{"get without key", req(BinGet, 1, 0, "", "", ""), []string{"get o=1 !INVALID", "!EOF"}},
	{"set short extras", req(BinSet, 1, 0, u32s(1), "k", "v"), []string{"set o=1 !INVALID", "!EOF"}},
	{"key 251", req(BinGet, 1, 0, "", strings.Repeat("k", 251), "") + req(BinNoop, 2, 0, "", "", ""), []string{"get o=1 !INVALID", "noop o=2", "!EOF"}},
	{"key with space", req(BinDelete, 1, 0, "", "a b", ""), []string{"delete o=1 !INVALID", "!EOF"}},
	{"key with NUL", req(BinGet, 1, 0, "", "a\x00", ""), []string{"get o=1 !INVALID", "!EOF"}},
	{"noop with body", req(BinNoop, 1, 0, "", "", "x"), []string{"noop o=1 !INVALID", "!EOF"}},
	{"verbosity", req(BinVerbosity, 1, 0, u32s(1), "", ""), []string{"verbosity o=1", "!EOF"}},
	{"body shorter than key", withBodyLen(req(BinGet, 1, 0, "", "kkkk", ""), 2)[:26] + req(BinNoop, 2, 0, "", "", ""),
		[]string{"get o=1 !INVALID", "noop o=2", "!EOF"}},
	{"absurd body", withBodyLen(req(BinGet, 1, 0, "", "k", ""), 0xffffffff), []string{"get o=1 !BODY_TOO_LONG"}},
	// A set declaring 4 GiB is not swallowed until the read deadline, as memcached's
	// dispatch_bin_command refuses any body over 1 GiB at once; 1 GiB itself is still a value
	// that is too large, swallowed.
	{"set declaring 4 GiB", withBodyLen(req(BinSet, 1, 0, u32s(0, 0), "k", "v"), 0xffffffff), []string{"set o=1 !BODY_TOO_LONG"}},
	{"set declaring over 1 GiB", withBodyLen(req(BinSetQ, 1, 0, u32s(0, 0), "k", "v"), 1<<30+1), []string{"setq o=1 !BODY_TOO_LONG"}},
	{"set declaring 1 GiB", withBodyLen(req(BinSet, 1, 0, u32s(0, 0), "k", "v"), 1<<30), []string{"!UNEXPECTED_EOF"}},
	{"bad magic", "get k\r\n" + strings.Repeat(" ", 17), []string{"!BAD_MAGIC"}},
	{"response magic", frame(BinaryResponseMagic, BinGet, 0, 0, 0, "", "", ""), []string{"!BAD_MAGIC"}},
	{"truncated header", req(BinGet, 1, 0, "", "k", "")[:10], []string{"!UNEXPECTED_EOF"}},
	{"truncated body", req(BinGet, 1, 0, "", "key", "")[:25], []string{"!UNEXPECTED_EOF"}},
	{"truncated swallow", req(BinSet, 1, 0, u32s(0, 0), "k", strings.Repeat("v", 100))[:50], []string{"!UNEXPECTED_EOF"}},
}

func TestBinaryReader(t *testing.T) {
	for _, tt := range binTests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAllBin(t, bufio.NewReaderSize(strings.NewReader(tt.input), 4096), binTestMaxItem)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("\n got %q\nwant %q", got, tt.want)
			}
			// In pieces: byte by byte through the smallest buffer.
			split := readAllBin(t, bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(tt.input)), 16), binTestMaxItem)
			if strings.Join(split, "\n") != strings.Join(got, "\n") {
				t.Fatalf("byte-wise differs:\n got %q\nwhole %q", split, got)
			}
		})
	}
}

func TestBinaryReaderErrorsWrapped(t *testing.T) {
	br := NewBinaryReader(bufio.NewReader(&errReader{data: []byte(req(BinGet, 1, 0, "", "k", "")[:5]), err: timeoutError{}}), 0)
	_, err := br.Next()
	var te timeoutError
	if !errors.As(err, &te) {
		t.Fatalf("err %v, want the reader's timeout wrapped", err)
	}
}

// TestBinaryTooLargeDoesNotAllocate: a declared body far over the limit is
// skipped or refused without a buffer of its size.
func TestBinaryTooLargeDoesNotAllocate(t *testing.T) {
	in := withBodyLen(req(BinSet, 1, 0, u32s(0, 0), "k", ""), 1<<30)
	br := NewBinaryReader(bufio.NewReader(io.MultiReader(strings.NewReader(in), io.LimitReader(zeroReader{}, 1<<30))), 1024)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := br.Next(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err %v", err)
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 || cap(br.body) > 0 {
		t.Fatalf("allocated %d bytes, buffer %d", d, cap(br.body))
	}
	// Refused without reading: a get that claims a gigabyte.
	br = NewBinaryReader(bufio.NewReader(strings.NewReader(withBodyLen(req(BinGet, 1, 0, "", "k", ""), 1<<30))), 1024)
	if _, err := br.Next(); !errors.Is(err, ErrBinaryBodyTooLong) || cap(br.body) > 0 {
		t.Fatalf("err %v, buffer %d", err, cap(br.body))
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func TestBinaryReaderNoAllocs(t *testing.T) {
	checkNoAllocs(t, []string{
		req(BinGetKQ, 1, 0, "", "jobs/open", ""),
		req(BinSet, 1, 0, u32s(1, 2), "jobs", strings.Repeat("v", 256)),
		req(BinDelete, 1, 5, "", "jobs", ""),
		req(BinGet, 1, 0, "", "a b", ""),
	}, func(r *bufio.Reader) func() {
		br := NewBinaryReader(r, 0)
		return func() { br.Next() }
	})
}

func TestBinaryWriter(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	w := NewBinaryWriter(bw)
	w.Item(BinGetK, 9, 77, 42, []byte("key"), []byte("value"))
	w.Item(BinTouch, 1, 2, 3, nil, nil)
	w.Status(BinGet, BinStatusKeyNotFound, 5, BinMsgNotFound)
	w.Status(BinNoop, BinStatusOK, 6, "")
	w.KeyStatus(BinGetK, BinStatusKeyNotFound, 7, []byte("k"))
	w.Stat(8, []byte("pid"), []byte("1"))
	w.Stat(8, nil, nil)
	w.Write(&BinaryResponse{Opcode: BinSet, Status: BinStatusInternalError, Opaque: 3, Cas: 4, Extras: []byte("e"), Key: []byte("k"), Value: []byte("v")})
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := frame(0x81, BinGetK, 0, 9, 77, u32s(42), "key", "value") +
		frame(0x81, BinTouch, 0, 1, 2, u32s(3), "", "") +
		frame(0x81, BinGet, 1, 5, 0, "", "", "Not found") +
		frame(0x81, BinNoop, 0, 6, 0, "", "", "") +
		frame(0x81, BinGetK, 1, 7, 0, "", "k", "") +
		frame(0x81, BinStat, 0, 8, 0, "", "pid", "1") +
		frame(0x81, BinStat, 0, 8, 0, "", "", "") +
		frame(0x81, BinSet, 0x84, 3, 4, "e", "k", "v")
	if buf.String() != want {
		t.Fatalf("\n got %q\nwant %q", buf.String(), want)
	}
	v := []byte("v")
	n := testing.AllocsPerRun(100, func() {
		w.Item(BinGet, 1, 2, 3, nil, v)
		w.Status(BinGet, BinStatusKeyNotFound, 1, BinMsgNotFound)
		_ = w.Flush()
	})
	if n != 0 {
		t.Errorf("%v allocs", n)
	}
}

func TestBinOpcodes(t *testing.T) {
	for op := range 256 {
		o := BinOpcode(op)
		if o.Known() != (o.String() != "unknown") {
			t.Errorf("%#x", op)
		}
	}
	for o, want := range map[BinOpcode]bool{BinGetQ: true, BinGetKQ: true, BinSetQ: true, BinGATQ: true, BinGATKQ: true,
		BinQuitQ: true, BinGet: false, BinNoop: false, BinGATK: false, BinStat: false} {
		if o.Quiet() != want {
			t.Errorf("%v.Quiet() = %v", o, !want)
		}
	}
	if BinGATKQ.String() != "gatkq" || BinOpcode(0x99).String() != "unknown" {
		t.Error("names")
	}
}
