package mcproto

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
)

// FuzzBinary checks that no input panics the binary reader, that what it accepts obeys its
// contract (valid keys, lengths that fit the opcode, values within the limit), and that reading
// byte by byte through a minimal buffer gives the same requests as reading whole.
func FuzzBinary(f *testing.F) {
	for _, tt := range binTests {
		f.Add([]byte(tt.input))
	}
	f.Add([]byte(req(BinGetQ, 1, 0, "", "a", "") + req(BinGetKQ, 2, 0, "", "b/open", "") + req(BinNoop, 3, 0, "", "", "")))
	f.Add([]byte(req(BinSetQ, 1, 0, u32s(1, 2), "k", "v") + req(BinDeleteQ, 2, 7, "", "k", "") + req(BinQuitQ, 3, 0, "", "", "")))
	f.Add([]byte(req(BinGATKQ, 1, 0, u32s(5), "k", "") + req(BinIncrement, 2, 0, strings.Repeat("\x00", 20), "k", "")))
	f.Fuzz(func(t *testing.T, in []byte) {
		whole := readAllBin(t, bufio.NewReaderSize(bytes.NewReader(in), 4096), binTestMaxItem)
		bytewise := readAllBin(t, bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(in)), 16), binTestMaxItem)
		if strings.Join(whole, "\n") != strings.Join(bytewise, "\n") {
			t.Fatalf("whole and byte-wise reading differ:\n whole %q\nbytes %q", whole, bytewise)
		}
	})
}
