package amqp

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"jobs", true},
		{"notifications.42", true},
		{"orders+billing", true},
		{"café", true}, // UTF-8
		{strings.Repeat("é", 127), true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{strings.Repeat("a", 256), false},
		{strings.Repeat("é", 128), false}, // 256 bytes
		{"caf\xe9", false},
		{"\xc3", false},
		{"\xed\xa0\x80", false}, // a UTF-16 surrogate
		{"amq.jobs", false},
		{"amq.", false},
		{"amqp", true},
		{"amq", true},
	} {
		if got := ValidName([]byte(tc.name)); got != tc.want {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
