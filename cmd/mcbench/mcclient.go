package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// mcClient is a minimal synchronous memcache text client: what a PHP or
// Python worker does, without a library's overhead blurring the numbers.
type mcClient struct {
	nc net.Conn
	r  *bufio.Reader
}

func dialMC(addr string) (*mcClient, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &mcClient{nc: nc, r: bufio.NewReader(nc)}, nil
}

func (c *mcClient) close() { c.nc.Close() }

func (c *mcClient) roundTrip(cmd []byte) (string, error) {
	if _, err := c.nc.Write(cmd); err != nil {
		return "", err
	}
	return c.line()
}

func (c *mcClient) line() (string, error) {
	s, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(s, "\r\n"), nil
}

// get returns the value, or nil on a miss.
func (c *mcClient) get(key string) ([]byte, error) {
	l, err := c.roundTrip([]byte("get " + key + "\r\n"))
	if err != nil {
		return nil, err
	}
	if l == "END" {
		return nil, nil
	}
	var k string
	var flags, n int
	if _, err := fmt.Sscanf(l, "VALUE %s %d %d", &k, &flags, &n); err != nil {
		return nil, fmt.Errorf("get: %q: %w", l, err)
	}
	v := make([]byte, n+2)
	if _, err := io.ReadFull(c.r, v); err != nil {
		return nil, err
	}
	if end, err := c.line(); err != nil || end != "END" {
		return nil, fmt.Errorf("get: want END, got %q (%v)", end, err)
	}
	return v[:n], nil
}
