package amqp

import (
	"net"
	"sync"
)

// corkConn lets the publish writers batch their frames into one write.
// amqp091-go flushes its buffer after every message, one syscall each; while
// a writer holds the cork, those writes collect here and go out together
// when the last holder releases it. Fewer, larger writes cost the gateway
// and the broker less per message.
type corkConn struct {
	net.Conn

	mu    sync.Mutex
	held  int    // guarded by mu
	buf   []byte // guarded by mu
	err   error  // guarded by mu: the first failed write while corked
	limit int
}

// corkLimit bounds what a cork may collect before it writes anyway.
const corkLimit = 256 << 10

func newCorkConn(c net.Conn) *corkConn { return &corkConn{Conn: c, limit: corkLimit} }

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held > 0 && len(c.buf)+len(p) <= c.limit {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// hold starts collecting writes.
func (c *corkConn) hold() {
	c.mu.Lock()
	c.held++
	c.mu.Unlock()
}

// release ends a hold; the last one writes what was collected.
func (c *corkConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held--
	if c.held > 0 {
		return nil
	}
	return c.flushLocked()
}

func (c *corkConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > corkLimit {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	if err != nil {
		// The reader sees the broken connection and the supervisor
		// reconnects; writes from now on fail.
		c.err = err
	}
	return err
}
