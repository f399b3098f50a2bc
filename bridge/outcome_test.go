package bridge

import (
	"slices"
	"testing"
)

// Every outcome has a result label, and the labels are the fixed set that
// dashboards and alerts name.
func TestOutcomeResultLabels(t *testing.T) {
	want := []string{"hit", "miss", "stored", "not_stored", "deleted", "not_found", "touched", "ok",
		"error", "client_error", "server_error"}
	for k := outHit; k <= outServerError; k++ {
		if !slices.Contains(want, k.String()) {
			t.Errorf("outcome %d has result label %q, not one of %v", k, k.String(), want)
		}
	}
	if got := len(outcomeResults); got != int(outServerError)+1 {
		t.Errorf("%d result labels for %d outcomes", got, outServerError+1)
	}
}
