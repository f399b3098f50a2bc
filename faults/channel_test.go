package faults

import (
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// The broker's consumer_timeout closes the channel of a reservation held too
// long: the reservations on that channel (here two clients' on one queue)
// are dropped and their messages handed out again, while a reservation on
// another queue's channel is untouched and its delete still acks.
func TestConsumerTimeoutHitsOnlyItsChannel(t *testing.T) {
	// Read when a channel opens: set before the gateway opens its own.
	testbroker.SetConsumerTimeout(t, 1500*time.Millisecond)

	g := testgateway.Start(t, nil, testgateway.Options{})
	qa, qb := testbroker.Name(t, "a"), testbroker.Name(t, "b")
	a, c, b := mctest.MustDialConn(t, g.Addr), mctest.MustDialConn(t, g.Addr), mctest.MustDialConn(t, g.Addr)
	expect(t, "set", "STORED")(a.Set(qa, "a1"))
	expect(t, "set", "STORED")(a.Set(qa, "a2"))
	wantHit(t, a, qa, "a1")
	wantHit(t, c, qa, "a2")
	held := time.Now()

	// b keeps a fresh reservation on qb (its own channel) until qa's
	// channel is closed by the broker, then acks the one it holds.
	openOn := func(q string) string {
		st, err := b.Stats("")
		if err != nil {
			t.Fatal(err)
		}
		return st["queue_"+q+"_open_transactions"]
	}
	dropped := false
	for i := 0; !dropped; i++ {
		expect(t, "set", "STORED")(b.Set(qb, "b"))
		wantHit(t, b, qb, "b")
		dropped = openOn(qa) == "0"
		expect(t, "delete on the other channel", "DELETED")(b.Delete(qb))
		if !dropped && time.Since(held) > 20*time.Second {
			t.Fatalf("the broker did not close the channel of a reservation held %v (consumer_timeout 1.5s)", time.Since(held))
		}
	}
	t.Logf("consumer_timeout closed the channel %v after the reservation", time.Since(held).Round(time.Millisecond))
	expect(t, "late delete", "NOT_FOUND")(a.Delete(qa))
	expect(t, "late delete", "NOT_FOUND")(c.Delete(qa))
	got := mctest.Drain(t, b, qa)
	if got["a1"] != 1 || got["a2"] != 1 || len(got) != 2 {
		t.Errorf("queue %s held %v after the timeout, want a1 and a2 back", qa, got)
	}
	if n := testbroker.QueueDepth(t, qb); n != 0 {
		t.Errorf("queue %s holds %d messages; every delete on it acked", qb, n)
	}
	if err := g.Broker.Ready(); err != nil {
		t.Errorf("a channel close took a connection down: %v", err)
	}
}
