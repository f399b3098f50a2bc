// Package mctest is a raw memcache text-protocol client for tests: it
// writes exactly the bytes a test gives it and checks exactly the bytes
// that come back, which a real client library would hide or fix up.
//
// It does not import bridge, so that bridge's own (package bridge) tests
// can use it too.
package mctest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// IOTimeout bounds every read and write, so that a gateway that stops
// answering fails the test instead of hanging it.
const IOTimeout = 15 * time.Second

// Client is a connection for the test goroutine: every method fails the
// test on an unexpected reply or error. NetConn and Reader are there for tests
// that read or write below the protocol (half-closes, pipelines, partial
// lines).
type Client struct {
	T       testing.TB
	NetConn net.Conn
	Reader  *bufio.Reader
	// Sent and Received count the bytes written and the reply bytes
	// expected, for checks on the gateway's byte counters.
	Sent, Received int
}

// Dial connects to a gateway at addr; the connection is closed when the
// test ends.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial gateway %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return New(t, nc)
}

// New wraps an open connection (e.g. a TLS one).
func New(t testing.TB, nc net.Conn) *Client {
	return &Client{T: t, NetConn: nc, Reader: bufio.NewReader(nc)}
}

// Send writes raw bytes.
func (c *Client) Send(s string) {
	c.T.Helper()
	_ = c.NetConn.SetWriteDeadline(time.Now().Add(IOTimeout))
	if _, err := io.WriteString(c.NetConn, s); err != nil {
		c.T.Fatalf("send %q: %v", Clip(s), err)
	}
	c.Sent += len(s)
}

// Expect reads exactly len(want) bytes and compares them with want.
func (c *Client) Expect(want string) {
	c.T.Helper()
	_ = c.NetConn.SetReadDeadline(time.Now().Add(IOTimeout))
	got := make([]byte, len(want))
	n, err := io.ReadFull(c.Reader, got)
	if err != nil {
		c.T.Fatalf("reading reply: want %q, got %q: %v", Clip(want), Clip(string(got[:n])), err)
	}
	if string(got) != want {
		c.T.Fatalf("reply mismatch:\n want %q\n  got %q", Clip(want), Clip(string(got)))
	}
	c.Received += len(want)
}

// Do sends a command and expects its exact reply.
func (c *Client) Do(cmd, want string) {
	c.T.Helper()
	c.Send(cmd)
	c.Expect(want)
}

// Line reads one reply line without its CR LF.
func (c *Client) Line() string {
	c.T.Helper()
	_ = c.NetConn.SetReadDeadline(time.Now().Add(IOTimeout))
	s, err := c.Reader.ReadString('\n')
	if err != nil {
		c.T.Fatalf("reading line: got %q: %v", s, err)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// ExpectClosed asserts that the server closed the connection: the next
// read ends in EOF or a reset, not data and not a timeout.
func (c *Client) ExpectClosed() {
	c.T.Helper()
	_ = c.NetConn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.Reader.ReadByte()
	if err == nil {
		c.T.Fatalf("connection still open: read %q", b)
	}
	if err != io.EOF && !IsReset(err) {
		c.T.Fatalf("want EOF, got %v", err)
	}
}

// Quit sends quit and asserts that the server closes the connection.
func (c *Client) Quit() {
	c.T.Helper()
	c.Send("quit\r\n")
	c.ExpectClosed()
}

// Close closes the connection now, before the test's cleanup would.
func (c *Client) Close() { c.NetConn.Close() }

// IsReset reports whether err is the peer resetting the connection, which
// a closing server may cause instead of a clean EOF.
func IsReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// Clip shortens s for a failure message.
func Clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
