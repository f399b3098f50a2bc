package bridge

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"time"
)

// watchClient returns a context that ends when the client goes away (its
// side of the connection closes or breaks) or the server drains, for a
// command that waits (kestrel's /t=): a wait must not outlive its client,
// or the next message would be handed to a dead waiter (and requeued,
// which a quorum queue's delivery limit counts), and the connection would
// stay counted against max_connections.
//
// While the command waits the connection reads nothing else, so a
// goroutine peeks at what comes in: pipelined commands are left in the
// buffer for later, an end of input ends the context. Once the pipelined
// commands fill the read buffer nothing behind them can be seen, the
// client's going away included: the context ends then too, so that the
// wait ends (a miss) rather than outlive its client by up to a day. stop
// ends the watch; it must be called before the connection reads again.
func (c *conn) watchClient() (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(c.srv.ctx)
	var stopping atomic.Bool
	done := make(chan struct{})
	// No read deadline while the command waits: how long it may wait is
	// the command's business.
	_ = c.nc.SetReadDeadline(time.Time{})
	if c.draining.Load() {
		// drain's deadline may just have been replaced.
		cancel()
	}
	go func() {
		defer close(done)
		for {
			n := c.br.Buffered()
			if n >= c.br.Size() {
				cancel()
				return
			}
			if _, err := c.br.Peek(n + 1); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) || c.draining.Load() || !stopping.Load() {
					cancel()
				}
				return
			}
		}
	}()
	return ctx, func() {
		stopping.Store(true)
		_ = c.nc.SetReadDeadline(time.Now()) // interrupts the peek
		<-done
		cancel()
	}
}
