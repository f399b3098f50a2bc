package shrink

import "testing"

func TestMap(t *testing.T) {
	m := make(map[int]int)
	for i := range 2000 {
		m[i] = i
	}
	if got, peak := Map(m, 2000); len(got) != 2000 || peak != 2000 {
		t.Fatalf("a full map: %d entries, peak %d", len(got), peak)
	}
	for i := 10; i < 2000; i++ {
		delete(m, i)
	}
	got, peak := Map(m, 2000)
	if len(got) != 10 || peak != 10 {
		t.Fatalf("a map down to 10 of 2000: %d entries, peak %d; want a copy of 10", len(got), peak)
	}
	for i := range 10 {
		if got[i] != i {
			t.Fatalf("entry %d = %d after the copy", i, got[i])
		}
	}
	got[99] = 99
	if _, ok := m[99]; ok {
		t.Fatal("the shrunk map is the old one")
	}
	small := map[int]int{1: 1}
	if _, peak := Map(small, 500); peak != 500 {
		t.Fatal("a map that never held 1,024 entries was copied")
	}
}
