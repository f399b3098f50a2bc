package amqp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// startInternal starts a client of the test broker for a test that looks
// inside it, with a connection name of its own (hint and a nanosecond
// stamp) and short reconnect backoffs, and a context that ends with the
// test (60s at most). The client closes when the test ends.
func startInternal(t *testing.T, hint string, o Options) (*Client, context.Context) {
	t.Helper()
	o.URLs = []string{testbroker.URL}
	o.ConnectionName = fmt.Sprintf("%s-%d", hint, time.Now().UnixNano())
	o.MinBackoff, o.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	c := New(o)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, ctx
}

// startWithQueue is startInternal plus a queue named after hint that the
// client declares, so that it knows the queue to be classic and may fetch
// it ahead.
func startWithQueue(t *testing.T, hint string, o Options) (*Client, context.Context, string) {
	t.Helper()
	c, ctx := startInternal(t, hint, o)
	q := testbroker.Name(t, hint)
	if err := c.EnsureQueue(ctx, QueueSpec{Name: q}, false); err != nil {
		t.Fatal(err)
	}
	return c, ctx, q
}
