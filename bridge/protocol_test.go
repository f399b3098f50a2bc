package bridge

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/mcproto"
)

// TestReplies checks the exact bytes of every reply of a simple session.
func TestReplies(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	c := g.dial()

	c.Do("set "+q+" 42 0 5\r\nhello\r\n", "STORED\r\n")
	c.Do("set "+q+" 0 0 0\r\n\r\n", "STORED\r\n")
	c.Do("set "+q+" 7 0 3 noreply\r\nabc\r\n", "")
	c.synced() // the noreply set was answered with nothing
	c.Do("get "+q+"\r\n", "VALUE "+q+" 42 5\r\nhello\r\nEND\r\n")
	// The connection holds a reservation on q: a second get is a miss.
	c.Do("get "+q+"\r\n", "END\r\n")
	c.Do("delete "+q+"\r\n", "DELETED\r\n")
	c.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
	c.Do("get "+q+"\r\n", "VALUE "+q+" 0 0\r\n\r\nEND\r\n")
	c.Do("delete "+q+" 0\r\n", "DELETED\r\n")
	c.Do("get "+q+"\r\n", "VALUE "+q+" 7 3\r\nabc\r\nEND\r\n")
	c.Do("delete "+q+" noreply\r\n", "")
	c.synced()
	c.Do("get "+q+"\r\n", "END\r\n")
	c.Do("touch "+q+" 10\r\n", "NOT_FOUND\r\n")
	c.Do("version\r\n", "VERSION "+Version+"\r\n")
	c.Do("verbosity 1\r\n", "OK\r\n")
	c.Do("verbosity 1 noreply\r\n", "")
	c.Do("flush_all\r\n", "OK\r\n")
	c.Do("flush_all 10 noreply\r\n", "")
	c.synced()
	c.Do("bogus\r\n", "ERROR\r\n")
	c.Do("\r\n", "ERROR\r\n")
	c.Do("quit\r\n", "")
	c.ExpectClosed()
}

// TestGetsCas checks that gets returns the reservation id as cas unique
// and that cas acks by that id from another connection.
func TestGetsCas(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	a, b := g.dial(), g.dial()
	a.Do("set "+q+" 3 0 2\r\nm1\r\n", "STORED\r\n")
	a.Do("set "+q+" 3 0 2\r\nm2\r\n", "STORED\r\n")

	a.Send("gets " + q + "\r\n")
	var key string
	var flags, n int
	var id uint64
	if _, err := fmt.Sscanf(a.Line(), "VALUE %s %d %d %d", &key, &flags, &n, &id); err != nil {
		t.Fatalf("gets header: %v", err)
	}
	a.Expect("m1\r\nEND\r\n")
	if key != q || flags != 3 || n != 2 || id == 0 {
		t.Fatalf("gets: key %q flags %d bytes %d cas %d", key, flags, n, id)
	}

	// A wrong id or queue is NOT_FOUND; the right one, from another
	// connection, is STORED (acked).
	b.Do(fmt.Sprintf("cas %s 0 0 1 %d\r\nx\r\n", q, id+1), "NOT_FOUND\r\n")
	b.Do(fmt.Sprintf("cas %s.other 0 0 1 %d\r\nx\r\n", q, id), "NOT_FOUND\r\n")
	b.Do(fmt.Sprintf("cas %s 0 0 1 %d\r\nx\r\n", q, id), "STORED\r\n")
	b.Do(fmt.Sprintf("cas %s 0 0 1 %d\r\nx\r\n", q, id), "NOT_FOUND\r\n")
	// The owner's reservation is gone with it.
	a.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")

	// The next message gets a new, different id.
	a.Send("gets " + q + "\r\n")
	var id2 uint64
	if _, err := fmt.Sscanf(a.Line(), "VALUE %s %d %d %d", &key, &flags, &n, &id2); err != nil {
		t.Fatalf("gets header: %v", err)
	}
	a.Expect("m2\r\nEND\r\n")
	if id2 == id {
		t.Fatalf("reservation id %d reused", id)
	}
	a.Do(fmt.Sprintf("cas %s 0 0 1 %d noreply\r\nx\r\n", q, id2), "")
	a.synced()
	a.Do("get "+q+"\r\n", "END\r\n")
}

// TestMultiGet: one line, several queues, hits and misses, keys echoed as
// sent.
func TestMultiGet(t *testing.T) {
	g := startGateway(t, nil)
	q1, q2, q3 := testbroker.Name(t, "a"), testbroker.Name(t, "b"), testbroker.Name(t, "c")
	c := g.dial()
	c.Do("set "+q1+" 1 0 1\r\n1\r\n", "STORED\r\n")
	c.Do("set "+q3+" 3 0 1\r\n3\r\n", "STORED\r\n")
	c.Do("get "+q1+" "+q2+" "+q3+"\r\n",
		"VALUE "+q1+" 1 1\r\n1\r\nVALUE "+q3+" 3 1\r\n3\r\nEND\r\n")
	c.Do("delete "+q1+"\r\n", "DELETED\r\n")
	c.Do("delete "+q3+"\r\n", "DELETED\r\n")
	c.Do("delete "+q2+"\r\n", "NOT_FOUND\r\n")
}

// TestBadInput sends each kind of bad input, then proves the connection is
// still in step, and that another connection never noticed.
func TestBadInput(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	bystander := g.dial()
	bystander.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")

	long := strings.Repeat("k", 251)
	cases := []struct {
		name, send, want string
	}{
		{"missing args", "set " + q + " 0 0\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"non-numeric flags", "set " + q + " x 0 1\r\nz\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"negative bytes", "set " + q + " 0 0 -1\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"bad data chunk", "set " + q + " 0 0 3\r\nabcXY", "CLIENT_ERROR bad data chunk\r\n"},
		{"key over 250 bytes", "set " + long + " 0 0 1\r\nz\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"key over 250 bytes in get", "get " + long + "\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"control character in key", "get a\x01b\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"options on set", "set " + q + "/open 0 0 1\r\nz\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"options on delete", "delete " + q + "/open\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"unknown option", "get " + q + "/bogus\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"invalid option combination", "get " + q + "/peek/open\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"reserved name on set", "set amq.gen 0 0 1\r\nz\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"reserved name on get", "get amq.gen\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"delete with a time", "delete " + q + " 10\r\n", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"},
		{"unknown command", "frobnicate " + q + "\r\n", "ERROR\r\n"},
		{"add", "add " + q + " 0 0 1\r\nz\r\n", "CLIENT_ERROR add not supported by queue gateway\r\n"},
		{"replace", "replace " + q + " 0 0 1\r\nz\r\n", "CLIENT_ERROR replace not supported by queue gateway\r\n"},
		{"append", "append " + q + " 0 0 1\r\nz\r\n", "CLIENT_ERROR append not supported by queue gateway\r\n"},
		{"prepend", "prepend " + q + " 0 0 1\r\nz\r\n", "CLIENT_ERROR prepend not supported by queue gateway\r\n"},
		{"incr", "incr " + q + " 1\r\n", "CLIENT_ERROR incr not supported by queue gateway\r\n"},
		{"decr", "decr " + q + " 1\r\n", "CLIENT_ERROR decr not supported by queue gateway\r\n"},
		{"too large", fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", q, 2<<20, strings.Repeat("v", 2<<20)), "SERVER_ERROR object too large for cache\r\n"},
		{"too large noreply", fmt.Sprintf("set %s 0 0 %d noreply\r\n%s\r\n", q, 2<<20, strings.Repeat("v", 2<<20)), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialClient(t, g.addr)
			c.Do(tc.send, tc.want)
			c.synced()
		})
	}
	// Nothing above was stored, and the bystander's message is intact.
	bystander.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nx\r\nEND\r\n")
	bystander.Do("delete "+q+"\r\n", "DELETED\r\n")
	bystander.Do("get "+q+"\r\n", "END\r\n")
}

// TestLineTooLong: a line past 2048 bytes is refused and the connection
// closed; a long multi-get line is fine.
func TestLineTooLong(t *testing.T) {
	g := startGateway(t, nil)
	c := g.dial()
	c.Send("set " + strings.Repeat("k", 3000))
	c.Expect("CLIENT_ERROR line too long\r\n")
	c.ExpectClosed()

	// A get line of many keys may pass 2048 bytes.
	q := testbroker.Name(t, "q")
	keys := make([]string, 0, 300)
	for range 300 {
		keys = append(keys, q)
	}
	line := "get " + strings.Join(keys, " ") + "\r\n"
	if len(line) < 4096 {
		t.Fatalf("test line too short: %d", len(line))
	}
	d := g.dial()
	d.Do(line, "END\r\n")
	d.synced()
}

// TestMaxConnections: the connection over the limit gets memcached's
// message and is closed; the others keep working.
func TestMaxConnections(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxConnections = 2
	g := startGateway(t, cfg)
	a, b := g.dial(), g.dial()
	a.synced()
	b.synced()
	c := g.dial()
	c.Expect("ERROR Too many open connections\r\n")
	c.ExpectClosed()
	a.synced()
	a.Close()
	// The freed slot is usable again once the server saw the close.
	testbroker.Eventually(t, 5*time.Second, "a free connection slot", func() bool {
		return g.srv.stats.currConns.Load() < 2
	})
	d := g.dial()
	d.synced()
	b.synced()
}

// TestIdleAndReadTimeout: idle connections are closed after idle_timeout;
// a command left half-sent is closed after read_timeout.
func TestIdleAndReadTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.IdleTimeout = 300 * time.Millisecond
	cfg.Limits.ReadTimeout = 200 * time.Millisecond
	g := startGateway(t, cfg)

	idle := g.dial()
	idle.synced()
	start := time.Now()
	idle.ExpectClosed()
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("idle connection closed after %v, before idle_timeout", d)
	}

	slow := g.dial()
	slow.Send("set x 0 0 10\r\nabc") // never finished
	slow.ExpectClosed()
}

// TestStats checks the general stats lines and the per-queue lines.
func TestStats(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	c := g.dial()
	c.Do("set "+q+" 0 0 1\r\na\r\n", "STORED\r\n")
	c.Do("set "+q+" 0 0 1\r\nb\r\n", "STORED\r\n")
	c.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\na\r\nEND\r\n")

	stats := map[string]string{}
	var order []string
	c.Send("stats\r\n")
	for {
		l := c.Line()
		if l == "END" {
			break
		}
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 || f[0] != "STAT" {
			t.Fatalf("bad stats line %q", l)
		}
		stats[f[1]] = f[2]
		order = append(order, f[1])
	}
	for _, name := range []string{"pid", "uptime", "time", "version", "curr_connections", "total_connections",
		"cmd_get", "cmd_set", "get_hits", "get_misses", "delete_hits", "delete_misses", "touch_hits",
		"touch_misses", "bytes_read", "bytes_written", "threads"} {
		if _, ok := stats[name]; !ok {
			t.Errorf("stats lacks %s", name)
		}
	}
	want := map[string]string{
		"cmd_set": "2", "cmd_get": "1", "get_hits": "1", "get_misses": "0", "curr_connections": "1",
		"version":                           Version,
		"queue_" + q + "_items":             "1",
		"queue_" + q + "_open_transactions": "1",
		"queue_" + q + "_total_items":       "2",
	}
	for k, v := range want {
		if stats[k] != v {
			t.Errorf("stats %s = %q, want %q", k, stats[k], v)
		}
	}
	if order[0] != "pid" {
		t.Errorf("stats start with %s, want pid", order[0])
	}

	c.Do("delete "+q+"\r\n", "DELETED\r\n")
	c.Do("stats queue\r\n", "STAT "+q+" 2/1\r\nEND\r\n")
	c.Do("stats nonsense\r\n", "ERROR\r\n")

	c.Send("stats settings\r\n")
	seen := map[string]string{}
	for {
		l := c.Line()
		if l == "END" {
			break
		}
		f := strings.SplitN(l, " ", 3)
		seen[f[1]] = f[2]
	}
	if seen["listen"] != "127.0.0.1:0" {
		t.Errorf("stats settings listen = %q", seen["listen"])
	}
	if u := seen["amqp.urls"]; strings.Contains(u, "guest:guest") || u == "" {
		t.Errorf("stats settings amqp.urls = %q: want the password redacted", u)
	}
}

// TestBinaryMagicOnlyOpensAConnection: 0x80 picks the binary protocol only
// as a connection's first byte; later in a text connection it is an unknown
// command like any other.
func TestBinaryMagicOnlyOpensAConnection(t *testing.T) {
	g := startGateway(t, nil)
	c := g.dial()
	c.synced()
	c.Do("\x80garbage\r\n", "ERROR\r\n")
	c.synced()
}

// statsOf reads a text "stats" listing into a map.
func statsOf(c *client) map[string]string {
	c.T.Helper()
	stats := map[string]string{}
	c.Send("stats\r\n")
	for l := c.Line(); l != "END"; l = c.Line() {
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 || f[0] != "STAT" {
			c.T.Fatalf("bad stats line %q", l)
		}
		stats[f[1]] = f[2]
	}
	return stats
}

// TestRefusedKeysAreNotCounted: as in memcached, a command refused for its
// key counts in no cmd_* stat, in any framing.
func TestRefusedKeysAreNotCounted(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	c := g.dial()
	for _, bad := range []string{"amq.x", q + "/open"} {
		c.Do("set "+bad+" 0 0 1\r\na\r\n", "CLIENT_ERROR bad command line format\r\n")
		c.Do("touch "+bad+" 10\r\n", "CLIENT_ERROR bad command line format\r\n")
		c.Do("ms "+bad+" 1\r\na\r\n", "CLIENT_ERROR bad command line format\r\n")
		c.Do("mg "+bad+" T10\r\n", "CLIENT_ERROR bad command line format\r\n")
	}
	c.Do("get amq.x\r\n", "CLIENT_ERROR bad command line format\r\n")
	b := g.dial()
	b.Do(bSet(mcproto.BinSet, 1, "amq.x", 0, "v"), bErr(mcproto.BinSet, mcproto.BinStatusInvalidArgs, 1, "Invalid arguments"))
	b.Do(breq(mcproto.BinTouch, 2, 0, be32(10), "amq.x", ""), bErr(mcproto.BinTouch, mcproto.BinStatusInvalidArgs, 2, "Invalid arguments"))
	b.Do(bGet(mcproto.BinGet, 3, "amq.x"), bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 3, "Invalid arguments"))
	b.bsynced()

	st := statsOf(c)
	for _, name := range []string{"cmd_set", "cmd_touch", "cmd_get"} {
		if st[name] != "0" {
			t.Errorf("after refused keys only, stats %s = %q, want 0", name, st[name])
		}
	}
	c.Do("set "+q+" 0 0 1\r\na\r\n", "STORED\r\n")
	c.Do("touch "+q+" 10\r\n", "NOT_FOUND\r\n")
	st = statsOf(c)
	if st["cmd_set"] != "1" || st["cmd_touch"] != "1" {
		t.Errorf("after one set and one touch, cmd_set = %q, cmd_touch = %q, want 1 and 1", st["cmd_set"], st["cmd_touch"])
	}
}
