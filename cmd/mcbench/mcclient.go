package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// mcClient is a minimal synchronous memcache text client: what a PHP or
// Python worker does, without a library's overhead blurring the numbers.
// It parses replies by hand, as libmemcached (under PHP's and Python's
// clients) does in C: the benchmark's clients share the machine's two cores
// with the gateway and the broker, so a costly parser here would be charged
// to the gateway's rates.
type mcClient struct {
	nc  net.Conn
	r   *bufio.Reader
	buf []byte // the request being written, reused
}

func dialMC(addr string) (*mcClient, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &mcClient{nc: nc, r: bufio.NewReader(nc)}, nil
}

func (c *mcClient) close() { c.nc.Close() }

// roundTrip writes cmd and returns the reply's first line.
func (c *mcClient) roundTrip(cmd []byte) (string, error) {
	l, err := c.roundTripLine(cmd)
	return string(l), err
}

// roundTripLine is roundTrip whose line is valid until the next read.
func (c *mcClient) roundTripLine(cmd []byte) ([]byte, error) {
	if _, err := c.nc.Write(cmd); err != nil {
		return nil, err
	}
	return c.line()
}

// line reads one line without its "\r\n"; valid until the next read.
func (c *mcClient) line() ([]byte, error) {
	l, err := c.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			err = fmt.Errorf("reply line longer than %d bytes", c.r.Size())
		}
		return nil, err
	}
	return bytes.TrimSuffix(l, []byte("\r\n")), nil
}

// set stores value under key and returns the reply line.
func (c *mcClient) set(key string, value []byte) (string, error) {
	b := append(c.buf[:0], "set "...)
	b = append(b, key...)
	b = append(b, " 0 0 "...)
	b = strconv.AppendInt(b, int64(len(value)), 10)
	b = append(b, "\r\n"...)
	b = append(b, value...)
	b = append(b, "\r\n"...)
	c.buf = b
	return c.roundTrip(b)
}

// get returns the value, or nil on a miss.
func (c *mcClient) get(key string) ([]byte, error) {
	b := append(c.buf[:0], "get "...)
	b = append(b, key...)
	b = append(b, "\r\n"...)
	c.buf = b
	l, err := c.roundTripLine(b)
	if err != nil {
		return nil, err
	}
	if string(l) == "END" {
		return nil, nil
	}
	n, err := valueLength(l)
	if err != nil {
		return nil, fmt.Errorf("get: %q: %w", l, err)
	}
	v := make([]byte, n+2)
	if _, err := io.ReadFull(c.r, v); err != nil {
		return nil, err
	}
	if end, err := c.line(); err != nil || string(end) != "END" {
		return nil, fmt.Errorf("get: want END, got %q (%v)", end, err)
	}
	return v[:n], nil
}

// valueLength reads the byte count of "VALUE <key> <flags> <bytes> [<cas>]".
func valueLength(l []byte) (int, error) {
	f := bytes.Fields(l)
	if len(f) < 4 || string(f[0]) != "VALUE" {
		return 0, errors.New("not a VALUE line")
	}
	if _, err := strconv.ParseUint(string(f[2]), 10, 32); err != nil {
		return 0, fmt.Errorf("flags: %w", err)
	}
	n, err := strconv.Atoi(string(f[3]))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad byte count %q", f[3])
	}
	return n, nil
}

// delete acks key's reservation and returns the reply line.
func (c *mcClient) delete(key string) (string, error) {
	b := append(c.buf[:0], "delete "...)
	b = append(b, key...)
	b = append(b, "\r\n"...)
	c.buf = b
	return c.roundTrip(b)
}
