package mcproto

import (
	"bufio"
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A block over MaxSharedBlock stays as it was read after Release and the
// next commands, in both readers (the gateway hands it to the broker
// without a copy); Release lets go of the block, and reports each block's
// size to the admit hook before reading it.
func TestLargeBlocksAreNotReused(t *testing.T) {
	big1 := strings.Repeat("a", MaxSharedBlock+1)
	big2 := strings.Repeat("b", MaxSharedBlock+100)
	var admitted []int
	admit := func(n int) error { admitted = append(admitted, n); return nil }

	in := "set k 0 0 " + strconv.Itoa(len(big1)) + "\r\n" + big1 + "\r\n" +
		"set k 0 0 " + strconv.Itoa(len(big2)) + "\r\n" + big2 + "\r\n" +
		"set k 0 0 1\r\nx\r\n"
	p := NewParser(bufio.NewReader(strings.NewReader(in)), 1<<20)
	p.SetAdmit(admit)
	cmd, err := p.Next()
	if err != nil {
		t.Fatal(err)
	}
	kept := cmd.Data
	p.Release()
	if cmd.Data != nil || cmd.Op != OpSet {
		t.Errorf("after Release: Data %d bytes, Op %v; want nil and set", len(cmd.Data), cmd.Op)
	}
	for range 2 {
		if _, err := p.Next(); err != nil {
			t.Fatal(err)
		}
		p.Release()
	}
	if string(kept) != big1 {
		t.Error("text: a large block was overwritten by later commands")
	}
	if want := []int{len(big1), len(big2), 1}; !slices.Equal(admitted, want) {
		t.Errorf("text admitted %v, want %v", admitted, want)
	}

	admitted = nil
	bin := req(BinSet, 1, 0, u32s(0, 0), "k", big1) + req(BinSet, 2, 0, u32s(0, 0), "k", big2) + req(BinGet, 3, 0, "", "k", "")
	br := NewBinaryReader(bufio.NewReader(strings.NewReader(bin)), 1<<20)
	br.SetAdmit(admit)
	r, err := br.Next()
	if err != nil {
		t.Fatal(err)
	}
	keptBin := r.Value
	br.Release()
	if r.Value != nil || r.Key != nil || r.Opaque != 1 {
		t.Errorf("after Release: value %d bytes, key %q, opaque %d", len(r.Value), r.Key, r.Opaque)
	}
	for range 2 {
		if _, err := br.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(keptBin, []byte(big1)) {
		t.Error("binary: a large value was overwritten by later requests")
	}
	if want := []int{len(big1), len(big2)}; !slices.Equal(admitted, want) {
		t.Errorf("binary admitted %v, want %v (a get has no value)", admitted, want)
	}
}
