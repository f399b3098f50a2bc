// Package shrink gives back the memory of maps that grew large and then
// emptied: a Go map keeps its room when entries are deleted, and a gateway
// that saw thousands of queues used once must not hold their room for ever.
package shrink

// minPeak: a map that never held this many entries is not worth copying.
const minPeak = 1024

// Map returns m, or, once it holds under a quarter of peak (the most
// entries it has had since it was made), a copy of it in a map sized for
// what it holds now; and the peak to remember from now on.
func Map[K comparable, V any](m map[K]V, peak int) (map[K]V, int) {
	if peak < minPeak || len(m) >= peak/4 {
		return m, peak
	}
	small := make(map[K]V, len(m))
	for k, v := range m {
		small[k] = v
	}
	return small, len(small)
}
