package bridge

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/mcproto"
)

// Buffer sizes per connection. Small on purpose: 5,000 idle connections
// must stay within a modest memory budget; the parser assembles longer
// lines itself.
const (
	readBufferSize  = 4 << 10
	writeBufferSize = 4 << 10
)

// closeReason says why a connection ended; it appears in logs.
type closeReason int

const (
	closeClientQuit closeReason = iota
	closeClientEOF
	closeIdleTimeout
	closeReadTimeout
	closeReadError
	closeWriteError
	closeLineTooLong
	closeShutdown
	closePanic
	closeHandshake
)

func (r closeReason) String() string {
	switch r {
	case closeClientQuit:
		return "client quit"
	case closeClientEOF:
		return "client closed"
	case closeIdleTimeout:
		return "idle timeout"
	case closeReadTimeout:
		return "read timeout"
	case closeReadError:
		return "read error"
	case closeWriteError:
		return "write error"
	case closeLineTooLong:
		return "line too long"
	case closeShutdown:
		return "server shutdown"
	case closePanic:
		return "internal error"
	case closeHandshake:
		return "TLS handshake failed or timed out"
	}
	return "unknown"
}

// conn is one client connection: the read loop, its buffers and its
// session.
type conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	p   *mcproto.Parser
	w   *mcproto.Writer
	// replies is the framing's writer over bw (the text Writer, or the
	// binary one once the connection speaks binary): flush goes through
	// it so that its first write error sticks.
	replies interface {
		Flush() error
		Err() error
	}
	sess *session

	draining atomic.Bool
	// drained is closed by drain: a wait for pending room gives up.
	drained chan struct{}
	// held is what this connection counts in the server's pending bytes:
	// the value of the command in hand, until it is answered.
	held int64
	// bodies is the framing's reader (the text Parser, or the binary one
	// once the connection speaks binary), whose large buffers are dropped
	// once a command is done.
	bodies interface{ Release() }
	// started: the connection has sent its first text command, so it is
	// a text connection for good.
	started bool
	// authDone: the connection may not log in any more (auth.mode
	// broker): it has, or it acts anonymously for good (see textAuth).
	authDone bool
	// items is reused by retrievals.
	items []*item
}

func newConn(srv *Server, nc net.Conn) *conn {
	counted := &countingConn{Conn: nc, srv: srv, writeTimeout: writeTimeout(srv.cfg.Limits.ReadTimeout)}
	c := &conn{
		srv:     srv,
		nc:      nc,
		bw:      bufio.NewWriterSize(counted, writeBufferSize),
		drained: make(chan struct{}),
	}
	c.sess = newSession(srv, c)
	c.br = bufio.NewReaderSize(&flushingReader{c: c, r: counted}, readBufferSize)
	c.p = mcproto.NewParser(c.br, int(srv.cfg.Limits.MaxItemSize))
	c.p.SetAdmit(c.admit)
	c.bodies = c.p
	c.w = mcproto.NewWriter(c.bw)
	c.replies = c.w
	return c
}

// drain asks the connection to stop after the command in hand. A read in
// progress is interrupted by the past deadline, a wait for pending room by
// drained.
func (c *conn) drain() {
	if c.draining.CompareAndSwap(false, true) {
		close(c.drained)
	}
	_ = c.nc.SetReadDeadline(time.Now())
}

// errDraining ends a command that waited for pending room while the
// gateway began to shut down.
var errDraining = errors.New("bridge: gateway shutting down")

// admit is the readers' hook before a value of n bytes is read into
// memory: it waits until the value fits in limits.max_pending_bytes
// (pendingBytes), leaving the bytes in the socket meanwhile.
func (c *conn) admit(n int) error {
	// Replies to the commands before it go out first: a pipelining
	// client may be waiting for them.
	ok, waited := c.srv.pending.acquire(int64(n), c.drained, func() { _ = c.flush() })
	if !ok {
		return errDraining
	}
	c.held += int64(n)
	if waited {
		// The wait is the gateway's, not the client's: the value gets a
		// whole read_timeout from now. Then, as in awaitCommand, look at
		// the flag after setting the deadline, so a drain is not lost.
		if rt := c.srv.cfg.Limits.ReadTimeout; rt > 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(rt))
		}
		if c.draining.Load() {
			return errDraining
		}
	}
	return nil
}

// commandDone ends the command in hand: its value no longer counts as
// pending (its publish has its verdict, or it was never published), and a
// large value's buffer is dropped now rather than when the next command
// comes, which may be much later.
func (c *conn) commandDone() {
	c.srv.pending.release(c.held)
	c.held = 0
	c.bodies.Release()
}

func (c *conn) serve() {
	log := c.srv.log.With("remote", c.nc.RemoteAddr().String())
	log.Debug("connection opened")
	reason := closeClientEOF
	defer func() {
		if v := recover(); v != nil {
			reason = closePanic
			log.Error("panic serving connection", "panic", v, "stack", string(debug.Stack()))
		}
		if reason == closeShutdown {
			// Replies to commands that ran (a STORED above all) must
			// reach the client before we hang up.
			_ = c.flush()
		}
		// Closing the socket first: a requeued message must not race a
		// reply that still reaches the client.
		c.nc.Close()
		// A command cut short (a read error inside its value) still held
		// its pending bytes.
		c.commandDone()
		if reason == closeShutdown {
			c.sess.close(metrics.ReasonShutdown)
		} else {
			c.sess.close(metrics.ReasonDisconnect)
		}
		log.Debug("connection closed", "reason", reason.String())
	}()
	if !c.handshake() {
		reason = closeHandshake
		return
	}
	reason = c.textLoop()
}

// handshaker is a connection that opens with a handshake (*tls.Conn).
type handshaker interface {
	HandshakeContext(ctx context.Context) error
}

// handshake runs a TLS connection's handshake within the read timeout (or
// defaultWriteTimeout when that is off): a client that connects and never
// speaks holds its connection slot no longer than one that stops in the
// middle of a command. Plain connections have nothing to do. false: the
// handshake failed and the connection must close.
func (c *conn) handshake() bool {
	h, ok := c.nc.(handshaker)
	if !ok {
		return true
	}
	_ = c.nc.SetDeadline(time.Now().Add(writeTimeout(c.srv.cfg.Limits.ReadTimeout)))
	if c.draining.Load() {
		// drain() ran before our deadline was set, and it would be lost.
		return false
	}
	if err := h.HandshakeContext(c.srv.ctx); err != nil {
		c.srv.log.Debug("TLS handshake failed", "remote", c.nc.RemoteAddr().String(), "err", err)
		return false
	}
	// Reads and writes set their own deadlines from here on.
	_ = c.nc.SetDeadline(time.Time{})
	return true
}

// awaitCommand waits up to idle_timeout for the first byte of the next
// command, then gives the rest of it (and its data block) read_timeout:
// slow or stuck senders do not hold a connection forever. ok is false when
// the connection must close, for reason.
func (c *conn) awaitCommand() (first byte, reason closeReason, ok bool) {
	limits := c.srv.cfg.Limits
	// Order matters against drain(): set our deadline, then look at the
	// flag, so a drain in between still interrupts the read.
	var idle time.Time
	if limits.IdleTimeout > 0 {
		idle = time.Now().Add(limits.IdleTimeout)
	}
	_ = c.nc.SetReadDeadline(idle)
	if c.draining.Load() {
		return 0, closeShutdown, false
	}
	b, err := c.br.Peek(1)
	if err != nil {
		return 0, c.readFailure(err, closeIdleTimeout), false
	}
	if limits.ReadTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(limits.ReadTimeout))
	}
	return b[0], 0, true
}

// labelInvalid is the command label of a line or request that could not be
// read as a command.
const labelInvalid = "invalid"

func (c *conn) readFailure(err error, timeoutReason closeReason) closeReason {
	if c.draining.Load() {
		return closeShutdown
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return timeoutReason
	}
	if errors.Is(err, io.EOF) {
		return closeClientEOF
	}
	return closeReadError
}

// flush writes buffered replies.
func (c *conn) flush() error {
	if c.bw.Buffered() == 0 {
		return c.replies.Err()
	}
	return c.replies.Flush()
}

// ackAfterWrite acks a destructive (ack: auto) read once the reply that
// carries it has reached the client; a failed write requeues it.
func (c *conn) ackAfterWrite(it *item) {
	if it == nil || it.autoAck == nil {
		return
	}
	items := append(c.items[:0], it)
	c.sess.delivered(items, c.flush())
	clear(items)
	c.items = items[:0]
}

// flushingReader sends buffered replies before the connection blocks for
// more input: replies to pipelined commands go out together, and a client
// never waits for a reply that sits behind a command it has not finished
// sending.
type flushingReader struct {
	c *conn
	r io.Reader
}

func (f *flushingReader) Read(p []byte) (int, error) {
	if f.c.bw.Buffered() > 0 {
		if err := f.c.flush(); err != nil {
			return 0, err
		}
	}
	return f.r.Read(p)
}

// defaultWriteTimeout bounds a write when read_timeout is off.
const defaultWriteTimeout = 30 * time.Second

// writeTimeout is how long a client may take to accept a reply's bytes:
// read_timeout, or defaultWriteTimeout when that is off, so that a client
// that stops reading never pins its connection and its reservations.
func writeTimeout(readTimeout time.Duration) time.Duration {
	if readTimeout > 0 {
		return readTimeout
	}
	return defaultWriteTimeout
}

// countingConn feeds bytes_read and bytes_written, and gives every write
// its own deadline: replies are written by flushes and, when a large reply
// fills the write buffer, in the middle of a command, possibly long after
// the last write of a connection that was quiet.
type countingConn struct {
	net.Conn
	srv          *Server
	writeTimeout time.Duration
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.srv.stats.bytesRead.Add(uint64(n))
		c.srv.metrics.BytesRead.Add(float64(n))
	}
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.srv.stats.bytesWritten.Add(uint64(n))
		c.srv.metrics.BytesWritten.Add(float64(n))
	}
	return n, err
}
