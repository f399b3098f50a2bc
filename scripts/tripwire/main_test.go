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

// The connector's socket is found by both of its ends: an earlier
// connection from the same local port to another address, now in TIME_WAIT
// with inode 0, listed first, once hid it (CI reported "unknown process").
func TestSocketInodeMatchesBothEnds(t *testing.T) {
	const table = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:86BE 0100007F:1628 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   1: 0100007F:86BE 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000
   2: 0100007F:86BE 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000
`
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0x86BE}
	for _, tc := range []struct {
		remote int
		want   string
	}{
		{0x9C40, "4242"}, // the live socket
		{0x1628, ""},     // TIME_WAIT, no owner
		{0x9C41, ""},     // inode 0: nobody to name
		{0x9C42, ""},     // not listed
	} {
		got := socketInode(strings.NewReader(table), local, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tc.remote})
		if got != tc.want {
			t.Errorf("remote port %d: inode %q, want %q", tc.remote, got, tc.want)
		}
	}
}
