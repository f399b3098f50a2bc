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
