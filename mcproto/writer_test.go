package mcproto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestWriter(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *Writer)
		want  string
	}{
		{"value", func(w *Writer) { w.Value([]byte("jobs/open"), 7, []byte("hello")) }, "VALUE jobs/open 7 5\r\nhello\r\n"},
		{"value empty", func(w *Writer) { w.Value([]byte("k"), 0, nil) }, "VALUE k 0 0\r\n\r\n"},
		{"value max flags", func(w *Writer) { w.Value([]byte("k"), 4294967295, []byte("x")) }, "VALUE k 4294967295 1\r\nx\r\n"},
		{"value binary data", func(w *Writer) { w.Value([]byte("k"), 0, []byte("a\r\nb\x00")) }, "VALUE k 0 5\r\na\r\nb\x00\r\n"},
		{"value cas", func(w *Writer) { w.ValueCas([]byte("k"), 1, []byte("ab"), 18446744073709551615) }, "VALUE k 1 2 18446744073709551615\r\nab\r\n"},
		{"get reply", func(w *Writer) { w.Value([]byte("a"), 0, []byte("1")); w.Value([]byte("b"), 0, []byte("2")); w.End() }, "VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n"},
		{"end", (*Writer).End, "END\r\n"},
		{"stored", (*Writer).Stored, "STORED\r\n"},
		{"not stored", (*Writer).NotStored, "NOT_STORED\r\n"},
		{"exists", (*Writer).Exists, "EXISTS\r\n"},
		{"not found", (*Writer).NotFound, "NOT_FOUND\r\n"},
		{"deleted", (*Writer).Deleted, "DELETED\r\n"},
		{"touched", (*Writer).Touched, "TOUCHED\r\n"},
		{"ok", (*Writer).OK, "OK\r\n"},
		{"error", (*Writer).Error, "ERROR\r\n"},
		{"client error", func(w *Writer) { w.ClientError("set not supported by queue gateway") }, "CLIENT_ERROR set not supported by queue gateway\r\n"},
		{"server error", func(w *Writer) { w.ServerError("not connected") }, "SERVER_ERROR not connected\r\n"},
		{"version", func(w *Writer) { w.Version("1.2.3") }, "VERSION 1.2.3\r\n"},
		{"stat", func(w *Writer) { w.Stat("jobs", []byte("3/2")) }, "STAT jobs 3/2\r\n"},
		{"stat int", func(w *Writer) { w.StatInt("pid", -12) }, "STAT pid -12\r\n"},
		{"stat uint", func(w *Writer) { w.StatUint("cmd_get", 18446744073709551615) }, "STAT cmd_get 18446744073709551615\r\n"},
		{"stat string", func(w *Writer) { w.StatString("version", "0.1.0") }, "STAT version 0.1.0\r\n"},
		{"raw", func(w *Writer) { w.Raw([]byte("MN\r\n")) }, "MN\r\n"},
		{"reply client error", func(w *Writer) { w.ErrorReply(errDeleteUsage) }, "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"},
		{"reply too large", func(w *Writer) { w.ErrorReply(ErrTooLarge) }, "SERVER_ERROR object too large for cache\r\n"},
		{"reply line too long", func(w *Writer) { w.ErrorReply(ErrLineTooLong) }, "CLIENT_ERROR line too long\r\n"},
		{"reply unknown", func(w *Writer) { w.ErrorReply(ErrUnknownCommand) }, "ERROR\r\n"},
		{"reply wrapped", func(w *Writer) { w.ErrorReply(fmt.Errorf("x: %w", errBadDataChunk)) }, "CLIENT_ERROR bad data chunk\r\n"},
		{"reply io error", func(w *Writer) { w.ErrorReply(io.EOF) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(bufio.NewWriter(&buf))
			tt.write(w)
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Errorf("got %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

func TestWriterErrorReplyResult(t *testing.T) {
	w := NewWriter(bufio.NewWriter(io.Discard))
	if w.ErrorReply(io.ErrUnexpectedEOF) {
		t.Error("an I/O error has a reply")
	}
	if !w.ErrorReply(ErrUnknownCommand) {
		t.Error("ErrUnknownCommand has no reply")
	}
}

type failWriter struct{ n int }

var errWrite = errors.New("broken pipe")

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errWrite
}

func TestWriterStickyError(t *testing.T) {
	fw := &failWriter{}
	w := NewWriter(bufio.NewWriterSize(fw, 16))
	w.Value([]byte("k"), 0, []byte(strings.Repeat("x", 100)))
	if !errors.Is(w.Err(), errWrite) {
		t.Fatalf("Err() = %v", w.Err())
	}
	calls := fw.n
	w.Stored()
	w.Value([]byte("k"), 0, []byte(strings.Repeat("x", 100)))
	if err := w.Flush(); !errors.Is(err, errWrite) {
		t.Errorf("Flush() = %v", err)
	}
	if fw.n != calls {
		t.Errorf("%d writes after the first error", fw.n-calls)
	}
}

func TestWriterNoAllocs(t *testing.T) {
	w := NewWriter(bufio.NewWriter(io.Discard))
	key, data := []byte("jobs/open"), []byte(strings.Repeat("v", 256))
	n := testing.AllocsPerRun(1000, func() {
		w.ValueCas(key, 42, data, 1<<40)
		w.End()
		w.StatUint("cmd_get", 12345)
		w.StatInt("uptime", 5)
		w.ClientError(MsgBadFormat)
	})
	if n != 0 {
		t.Errorf("%v allocs per reply", n)
	}
}
