// Command tripwire listens where no test may connect and reports every
// connection, with the program that made it. make test (scripts/test.sh)
// puts it on 127.0.0.1:5672, the machine's broker's address, while the test
// suite runs on a machine where nothing else listens there: the tests run
// against private nodes of their own, so any connection is a test that is
// not hermetic.
//
//	tripwire -listen 127.0.0.1:5672
//
// It runs until SIGTERM or SIGINT, then exits 0 if nothing connected and 3
// if something did.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// errTripped is returned when something connected.
var errTripped = errors.New("tripped")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	switch {
	case errors.Is(err, errTripped):
		os.Exit(3)
	case err != nil:
		fmt.Fprintln(os.Stderr, "tripwire:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tripwire", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:5672", "address nobody may connect to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "tripwire: listening on %s\n", ln.Addr())
	go func() {
		<-ctx.Done()
		ln.Close()
	}()

	var mu sync.Mutex // guards out and n
	n := 0
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		// Who it is, while the connection is still open.
		who := connector(c)
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		first := make([]byte, 8)
		k, _ := io.ReadFull(c, first)
		c.Close()
		mu.Lock()
		n++
		fmt.Fprintf(out, "tripwire: %s connection from %s (%s), first bytes %q\n",
			time.Now().Format(time.RFC3339Nano), c.RemoteAddr(), who, first[:k])
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(out, "tripwire: %d connections to %s\n", n, *listen)
	if n > 0 {
		return errTripped
	}
	return nil
}

// connector names the process at the other end of c, a loopback
// connection: the owner of the socket whose local address is c's remote
// one, found through /proc/net/tcp and the processes' file descriptors.
// It returns "unknown process" when it cannot tell.
//
// The kernel lists /proc/net/tcp bucket by bucket without a snapshot: while
// many sockets come and go (a whole test suite) a read may miss one, so
// the search is tried a few times.
func connector(c net.Conn) string {
	peer, ok := c.RemoteAddr().(*net.TCPAddr)
	listener, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok || !ok2 || peer.IP.To4() == nil || listener.IP.To4() == nil {
		return "unknown process"
	}
	for range 10 {
		if who := findConnector(peer, listener); who != "" {
			return who
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "unknown process"
}

func findConnector(peer, listener *net.TCPAddr) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return ""
	}
	inode := socketInode(f, peer, listener)
	f.Close()
	if inode == "" {
		return ""
	}
	target := "socket:[" + inode + "]"
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && l == target {
			pid := strings.Split(fd, "/")[2]
			cmd, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
			return fmt.Sprintf("pid %s: %s", pid, strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")))
		}
	}
	return ""
}

// socketInode finds, in a /proc/net/tcp listing, the inode of the IPv4
// socket from local to remote. Both ends must match: the same local port
// also shows up in sockets of earlier connections to other addresses
// (TIME_WAIT, inode 0), which a whole test suite leaves by the thousand.
func socketInode(table io.Reader, local, remote *net.TCPAddr) string {
	want, peer := procAddr(local), procAddr(remote)
	sc := bufio.NewScanner(table)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 9 && f[1] == want && f[2] == peer {
			if n, err := strconv.Atoi(f[9]); err == nil && n != 0 {
				return f[9]
			}
		}
	}
	return ""
}

// procAddr spells an IPv4 address as /proc/net/tcp prints it: the 32-bit
// value in host (little-endian) order, then the port.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}
