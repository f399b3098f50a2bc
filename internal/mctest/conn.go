package mctest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Conn is a connection for load goroutines: its methods return errors
// instead of failing the test, since only the test goroutine may call
// t.Fatal. Replies are still checked byte for byte: every line must end in
// CR LF and a value must be framed as the protocol says. NetConn and
// Reader are there for tests that read below the protocol.
type Conn struct {
	NetConn net.Conn
	Reader  *bufio.Reader
}

// DialConn connects to a gateway at addr. The caller closes it.
func DialConn(addr string) (*Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return NewConn(nc), nil
}

// MustDialConn is DialConn for the test goroutine: it fails the test if the
// gateway does not accept, and closes the connection when the test ends.
func MustDialConn(t testing.TB, addr string) *Conn {
	t.Helper()
	c, err := DialConn(addr)
	if err != nil {
		t.Fatalf("dial gateway %s: %v", addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

// NewConn wraps an open connection (e.g. a TLS one).
func NewConn(nc net.Conn) *Conn { return &Conn{NetConn: nc, Reader: bufio.NewReader(nc)} }

// Close closes the connection; a worker that drops it mid-reservation
// makes the gateway requeue what it held.
func (c *Conn) Close() { _ = c.NetConn.Close() }

// Send writes raw bytes.
func (c *Conn) Send(s string) error {
	_ = c.NetConn.SetWriteDeadline(time.Now().Add(IOTimeout))
	_, err := io.WriteString(c.NetConn, s)
	return err
}

// Line reads one reply line without its CR LF.
func (c *Conn) Line() (string, error) {
	_ = c.NetConn.SetReadDeadline(time.Now().Add(IOTimeout))
	line, err := c.Reader.ReadString('\n')
	if err != nil {
		return line, err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return line, fmt.Errorf("reply line %q not ended by CR LF", line)
	}
	return strings.TrimSuffix(line, "\r\n"), nil
}

// RoundTrip sends a command and returns its one-line reply.
func (c *Conn) RoundTrip(cmd string) (string, error) {
	if err := c.Send(cmd); err != nil {
		return "", err
	}
	return c.Line()
}

// Set stores value under key and returns the reply (STORED, SERVER_ERROR
// …): what a reply means is the test's to judge.
func (c *Conn) Set(key, value string) (string, error) {
	return c.RoundTrip(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(value), value))
}

// Delete acks the reservation of key and returns the reply.
func (c *Conn) Delete(key string) (string, error) { return c.RoundTrip("delete " + key + "\r\n") }

// ReplyError is a reply that is neither a value nor END, e.g. a
// SERVER_ERROR line: its text is the reply.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

// Get reserves one message of key: hit is false on a miss (END). A reply
// other than a value or END is returned as a ReplyError.
func (c *Conn) Get(key string) (hit bool, value string, err error) {
	if err := c.Send("get " + key + "\r\n"); err != nil {
		return false, "", err
	}
	l, err := c.Line()
	if err != nil {
		return false, "", err
	}
	if l == "END" {
		return false, "", nil
	}
	if !strings.HasPrefix(l, "VALUE ") {
		return false, "", ReplyError(l)
	}
	f := strings.Fields(l)
	if len(f) != 4 || f[1] != key {
		return false, "", fmt.Errorf("get %s: unexpected reply %q", key, l)
	}
	n, err := strconv.Atoi(f[3])
	if err != nil {
		return false, "", fmt.Errorf("get %s: bad length in %q", key, l)
	}
	data := make([]byte, n+2)
	if _, err := io.ReadFull(c.Reader, data); err != nil {
		return false, "", err
	}
	if string(data[n:]) != "\r\n" {
		return false, "", fmt.Errorf("get %s: data block not ended by CR LF: %q", key, data)
	}
	if end, err := c.Line(); err != nil || end != "END" {
		return false, "", fmt.Errorf("get %s: want END after the value, got %q (%v)", key, end, err)
	}
	return true, string(data[:n]), nil
}

// Stats returns `stats <args>` (args may be empty) as a map.
func (c *Conn) Stats(args string) (map[string]string, error) {
	cmd := "stats\r\n"
	if args != "" {
		cmd = "stats " + args + "\r\n"
	}
	if err := c.Send(cmd); err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for {
		l, err := c.Line()
		if err != nil {
			return nil, err
		}
		if l == "END" {
			return out, nil
		}
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 || f[0] != "STAT" {
			return nil, fmt.Errorf("bad stats line %q", l)
		}
		out[f[1]] = f[2]
	}
}
