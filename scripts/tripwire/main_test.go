package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// A connection trips the wire: it is reported with the program that made
// it (this test binary), and run says so when it stops.
func TestTripwire(t *testing.T) {
	for _, connect := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := run(ctx, []string{"-listen", "127.0.0.1:0"}, pw)
			pw.Close()
			done <- err
		}()
		lines := bufio.NewScanner(pr)
		if !lines.Scan() {
			t.Fatal("no output")
		}
		addr, ok := strings.CutPrefix(lines.Text(), "tripwire: listening on ")
		if !ok {
			t.Fatalf("first line %q", lines.Text())
		}
		if connect {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
				t.Fatal(err)
			}
			if !lines.Scan() {
				t.Fatal("no report of the connection")
			}
			if l := lines.Text(); !strings.Contains(l, "tripwire.test") || !strings.Contains(l, `"AMQP\x00\x00\t\x01"`) {
				t.Errorf("report %q does not name this test binary and its first bytes", l)
			}
			c.Close()
		}
		cancel()
		if !lines.Scan() {
			t.Fatal("no summary")
		}
		select {
		case err := <-done:
			if connect != errors.Is(err, errTripped) {
				t.Errorf("connected %v: run returned %v (summary %q)", connect, err, lines.Text())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("run did not return after the cancel")
		}
	}
}
