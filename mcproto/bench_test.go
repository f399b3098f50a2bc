package mcproto

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

func benchParse(b *testing.B, cmd string) {
	p := NewParser(bufio.NewReaderSize(&cycleReader{data: []byte(cmd)}, 4096), 0)
	b.SetBytes(int64(len(cmd)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseGet(b *testing.B) {
	benchParse(b, "get jobs/open\r\n")
}

func BenchmarkParseMultiGet(b *testing.B) {
	benchParse(b, "gets q1 q2 q3 q4 q5 q6 q7 q8 q9 q10\r\n")
}

func BenchmarkParseSet(b *testing.B) {
	benchParse(b, "set jobs 0 0 256\r\n"+strings.Repeat("v", 256)+"\r\n")
}

func BenchmarkSplitKey(b *testing.B) {
	key := []byte("jobs/close/open/t=1000")
	b.ReportAllocs()
	for b.Loop() {
		SplitKey(key)
	}
}

func BenchmarkWriteValue(b *testing.B) {
	w := NewWriter(bufio.NewWriter(io.Discard))
	key, data := []byte("jobs/open"), []byte(strings.Repeat("v", 256))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		w.ValueCas(key, 0, data, 123456789)
		w.End()
	}
}
