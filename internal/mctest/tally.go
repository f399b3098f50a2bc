package mctest

import "testing"

// Drain reserves and deletes every message of q through c and returns the
// multiset of their bodies (body → times seen), which load and fault tests
// compare with what the clients were told was STORED. It fails the test on
// any error, so call it from the test goroutine.
func Drain(t testing.TB, c *Conn, q string) map[string]int {
	t.Helper()
	got := make(map[string]int)
	for range 10000 {
		hit, v, err := c.Get(q)
		if err != nil {
			t.Fatalf("drain %s: %v", q, err)
		}
		if !hit {
			return got
		}
		got[v]++
		if r, err := c.Delete(q); err != nil || r != "DELETED" {
			t.Fatalf("delete while draining: got %q, %v, want %q", r, err, "DELETED")
		}
	}
	t.Fatalf("drain %s: too many messages", q)
	return nil
}
