package faults

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
)

// The hunting test's clients speak every framing through one interface, so
// that one random operation becomes text, binary or meta bytes. Each
// method returns what the client was told, byte-checked; a reply that
// breaks the framing is an error.

// framing names a protocol.
type framing int

const (
	textFraming framing = iota
	binaryFraming
	metaFraming
)

func (f framing) String() string { return [...]string{"text", "binary", "meta"}[f] }

// setOutcome is what a set was told.
type setOutcome int

const (
	outStored setOutcome = iota
	outNotStored
	outServerError
)

// hit is one message handed to a client.
type hit struct {
	body string
	cas  uint64 // the reservation id, 0 when the framing did not ask
}

// huntConn is one client connection.
type huntConn struct {
	f  framing
	nc net.Conn
	r  *bufio.Reader
}

func dialHunt(addr string, f framing) (*huntConn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &huntConn{f: f, nc: nc, r: bufio.NewReader(nc)}, nil
}

func (c *huntConn) close() { _ = c.nc.Close() }

func (c *huntConn) send(s string) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(mctest.IOTimeout))
	_, err := io.WriteString(c.nc, s)
	return err
}

func (c *huntConn) line() (string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(mctest.IOTimeout))
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(l, "\r\n") {
		return "", fmt.Errorf("reply %q not ended by CR LF", l)
	}
	return strings.TrimSuffix(l, "\r\n"), nil
}

func (c *huntConn) data(n int) (string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(mctest.IOTimeout))
	b := make([]byte, n+2)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return "", err
	}
	if string(b[n:]) != "\r\n" {
		return "", fmt.Errorf("data block not ended by CR LF: %q", b)
	}
	return string(b[:n]), nil
}

// binary request and response, byte by byte (mctest.BinFrame's layout).
func (c *huntConn) binRound(op byte, cas uint64, extras, key, value string) (status uint16, rcas uint64, rvalue string, err error) {
	if err := c.send(mctest.BinFrame(0x80, op, 0, 7, cas, extras, key, value)); err != nil {
		return 0, 0, "", err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(mctest.IOTimeout))
	h := make([]byte, 24)
	if _, err := io.ReadFull(c.r, h); err != nil {
		return 0, 0, "", err
	}
	if h[0] != 0x81 || h[1] != op || binary.BigEndian.Uint32(h[12:]) != 7 {
		return 0, 0, "", fmt.Errorf("binary response header %x to opcode %#x", h, op)
	}
	body := make([]byte, binary.BigEndian.Uint32(h[8:]))
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, 0, "", err
	}
	skip := int(h[4]) + int(binary.BigEndian.Uint16(h[2:]))
	return binary.BigEndian.Uint16(h[6:]), binary.BigEndian.Uint64(h[16:]), string(body[skip:]), nil
}

// be32 is v as 4 big-endian bytes.
var be32 = mctest.BE32

// set publishes body under key.
func (c *huntConn) set(key, body string) (setOutcome, string, error) {
	var reply string
	switch c.f {
	case binaryFraming:
		st, _, v, err := c.binRound(0x01, 0, be32(0)+be32(0), key, body)
		if err != nil {
			return 0, "", err
		}
		switch st {
		case 0:
			return outStored, "", nil
		case 0x05:
			return outNotStored, "", nil
		case 0x84:
			return outServerError, v, nil
		}
		return 0, "", fmt.Errorf("binary set: status %#x %q", st, v)
	case metaFraming:
		if err := c.send(fmt.Sprintf("ms %s %d\r\n%s\r\n", key, len(body), body)); err != nil {
			return 0, "", err
		}
		l, err := c.line()
		if err != nil {
			return 0, "", err
		}
		switch {
		case l == "HD":
			return outStored, "", nil
		case l == "NS":
			return outNotStored, "", nil
		}
		reply = l
	default:
		if err := c.send(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(body), body)); err != nil {
			return 0, "", err
		}
		l, err := c.line()
		if err != nil {
			return 0, "", err
		}
		switch l {
		case "STORED":
			return outStored, "", nil
		case "NOT_STORED":
			return outNotStored, "", nil
		}
		reply = l
	}
	if strings.HasPrefix(reply, "SERVER_ERROR ") {
		return outServerError, reply, nil
	}
	return 0, "", fmt.Errorf("%s set: %q", c.f, reply)
}

// get reserves (or, with kestrel options, does what they say) one message
// of key. lease > 0 asks for that lease (gat, mg T); lease < 0 is a
// negative gat: a peek.
func (c *huntConn) get(key string, lease int) (*hit, error) {
	switch c.f {
	case binaryFraming:
		op, extras := byte(0x00), ""
		if lease > 0 {
			op, extras = 0x1d, be32(uint32(lease))
		}
		st, cas, v, err := c.binRound(op, 0, extras, key, "")
		if err != nil {
			return nil, err
		}
		switch st {
		case 0:
			return &hit{body: v, cas: cas}, nil
		case 0x01:
			return nil, nil
		case 0x84:
			return nil, serverError(v)
		}
		return nil, fmt.Errorf("binary get: status %#x %q", st, v)
	case metaFraming:
		cmd := "mg " + key + " v c"
		if lease != 0 {
			cmd += " T" + strconv.Itoa(lease)
		}
		if err := c.send(cmd + "\r\n"); err != nil {
			return nil, err
		}
		l, err := c.line()
		if err != nil {
			return nil, err
		}
		if l == "EN" {
			return nil, nil
		}
		var n int
		var cas uint64
		if _, err := fmt.Sscanf(l, "VA %d c%d", &n, &cas); err != nil {
			if strings.HasPrefix(l, "SERVER_ERROR ") {
				return nil, serverError(l)
			}
			return nil, fmt.Errorf("meta get: %q", l)
		}
		v, err := c.data(n)
		return &hit{body: v, cas: cas}, err
	}
	cmd := "gets " + key
	if lease != 0 {
		cmd = fmt.Sprintf("gats %d %s", lease, key)
	}
	if err := c.send(cmd + "\r\n"); err != nil {
		return nil, err
	}
	l, err := c.line()
	if err != nil {
		return nil, err
	}
	if l == "END" {
		return nil, nil
	}
	if strings.HasPrefix(l, "SERVER_ERROR ") {
		return nil, serverError(l)
	}
	f := strings.Fields(l)
	if len(f) != 5 || f[0] != "VALUE" || f[1] != key {
		return nil, fmt.Errorf("text get %s: %q", key, l)
	}
	n, _ := strconv.Atoi(f[3])
	cas, _ := strconv.ParseUint(f[4], 10, 64)
	v, err := c.data(n)
	if err != nil {
		return nil, err
	}
	if end, err := c.line(); err != nil || end != "END" {
		return nil, fmt.Errorf("text get: want END, got %q %v", end, err)
	}
	return &hit{body: v, cas: cas}, nil
}

// serverError is a SERVER_ERROR reply to a get: the client retries later.
type serverError string

func (e serverError) Error() string { return string(e) }

// del acks this connection's reservation on key; id != 0 acks that
// reservation id from this connection, whoever holds it.
func (c *huntConn) del(key string, id uint64) (bool, error) {
	switch c.f {
	case binaryFraming:
		st, _, v, err := c.binRound(0x04, id, "", key, "")
		if err != nil {
			return false, err
		}
		switch st {
		case 0:
			return true, nil
		case 0x01:
			return false, nil
		}
		return false, fmt.Errorf("binary delete: status %#x %q", st, v)
	case metaFraming:
		cmd := "md " + key
		if id != 0 {
			cmd += " C" + strconv.FormatUint(id, 10)
		}
		return c.yesNo(cmd+"\r\n", "HD", "NF")
	}
	if id != 0 {
		return c.yesNo(fmt.Sprintf("cas %s 0 0 1 %d\r\nx\r\n", key, id), "STORED", "NOT_FOUND")
	}
	return c.yesNo("delete "+key+"\r\n", "DELETED", "NOT_FOUND")
}

// touch sets the lease of this connection's reservation on key; a negative
// exptime gives it back (text and meta only: binary exptimes are unsigned).
func (c *huntConn) touch(key string, exptime int) (bool, error) {
	switch c.f {
	case binaryFraming:
		st, _, v, err := c.binRound(0x1c, 0, be32(uint32(exptime)), key, "")
		if err != nil {
			return false, err
		}
		switch st {
		case 0:
			return true, nil
		case 0x01:
			return false, nil
		}
		return false, fmt.Errorf("binary touch: status %#x %q", st, v)
	case metaFraming:
		return c.yesNo(fmt.Sprintf("mg %s T%d\r\n", key, exptime), "HD", "EN")
	}
	return c.yesNo(fmt.Sprintf("touch %s %d\r\n", key, exptime), "TOUCHED", "NOT_FOUND")
}

func (c *huntConn) yesNo(cmd, yes, no string) (bool, error) {
	if err := c.send(cmd); err != nil {
		return false, err
	}
	l, err := c.line()
	switch {
	case err != nil:
		return false, err
	case l == yes:
		return true, nil
	case l == no:
		return false, nil
	}
	return false, fmt.Errorf("%s %q: reply %q", c.f, strings.TrimSpace(cmd), l)
}
