// Package faults proves mcbridge's at-least-once promise under injected
// faults: broker connections cut, stalled or closed by the broker, lost
// confirms, memory alarms, slow and hostile clients, TLS on both sides. The
// gateway runs in-process, talking to the real RabbitMQ through a proxy that
// the tests control.
package faults

import (
	"testing"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestMain(m *testing.M) {
	testbroker.Main(m)
}

// publishConnName is what amqp names the publishing connection.
func publishConnName(name string) string { return name + " " + string(amqp.RolePublish) + " 0" }

// expect checks a one-line reply: expect(t, "set", "STORED")(c.Set(k, v)).
func expect(t testing.TB, what, wantReply string) func(string, error) {
	return func(got string, err error) {
		t.Helper()
		want(t, what, got, err, wantReply)
	}
}

// want checks a one-line reply.
func want(t testing.TB, what string, got string, err error, wantReply string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != wantReply {
		t.Fatalf("%s: got %q, want %q", what, got, wantReply)
	}
}
