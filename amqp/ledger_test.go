package amqp

import (
	"slices"
	"testing"
)

func TestTagLedgerRun(t *testing.T) {
	l := newTagLedger()
	// 1, 2, 3 acked together: one multiple ack up to 3.
	if upTo, rest := l.run([]uint64{1, 2, 3}); upTo != 3 || len(rest) != 0 {
		t.Fatalf("run(1,2,3) = %d, %v; want 3, none", upTo, rest)
	}
	l.mark(1, 2, 3)
	// 4 is held by a client: 5 and 6 cannot go as a multiple ack.
	if upTo, rest := l.run([]uint64{5, 6}); upTo != 0 || !slices.Equal(rest, []uint64{5, 6}) {
		t.Fatalf("run(5,6) with 4 unsettled = %d, %v; want 0, [5 6]", upTo, rest)
	}
	l.mark(5, 6)
	// 4 and 8 now: 4..6 are covered (5, 6 settled) but 7 is not, so the
	// run ends at 4, alone: a plain ack; 8 goes alone too.
	if upTo, rest := l.run([]uint64{4, 8}); upTo != 0 || !slices.Equal(rest, []uint64{4, 8}) {
		t.Fatalf("run(4,8) = %d, %v; want 0, [4 8]", upTo, rest)
	}
	l.mark(4, 8)
	// 7 and 9: the run is 7 (new), 8 (settled), 9 (new): multiple up to 9,
	// which is being acked now, never the settled 8.
	if upTo, rest := l.run([]uint64{7, 9}); upTo != 9 || len(rest) != 0 {
		t.Fatalf("run(7,9) = %d, %v; want 9, none", upTo, rest)
	}
	l.mark(7, 9)
	// 10 and 12 with 11 settled in between: the multiple ack names 12.
	l.mark(11)
	if upTo, rest := l.run([]uint64{10, 12, 14}); upTo != 12 || !slices.Equal(rest, []uint64{14}) {
		t.Fatalf("run(10,12,14) = %d, %v; want 12, [14]", upTo, rest)
	}
	// 10 to 12 settled, 13 not: 15 is no run from the frontier.
	l.mark(10, 12, 14)
	if upTo, rest := l.run([]uint64{15}); upTo != 0 || !slices.Equal(rest, []uint64{15}) {
		t.Fatalf("run(15) = %d, %v; want 0, [15]", upTo, rest)
	}
}

// A delivery held for long leaves a gap; past maxLedgerGaps settled tags
// behind it the ledger gives up rather than grow: every ack goes alone.
func TestTagLedgerGivesUpOnLongGap(t *testing.T) {
	l := newTagLedger()
	for tag := uint64(2); tag < 2+maxLedgerGaps+1; tag++ {
		l.mark(tag)
	}
	l.mark(1)
	next := uint64(2 + maxLedgerGaps + 1)
	if upTo, rest := l.run([]uint64{next, next + 1}); upTo != 0 || len(rest) != 2 {
		t.Fatalf("after giving up, run = %d, %v; want 0 and both alone", upTo, rest)
	}
	if len(l.above) != 0 {
		t.Fatalf("ledger keeps %d tags after giving up", len(l.above))
	}
}
