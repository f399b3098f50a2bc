package bridge

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/mcproto"
)

// Frames built byte by byte by mctest, independently of mcproto's writer.
var (
	breq      = mctest.BinRequest[mcproto.BinOpcode]
	bresp     = mctest.BinResponse[mcproto.BinOpcode, mcproto.BinStatus]
	be32      = mctest.BE32
	setExtras = mctest.SetExtras
	bGet      = mctest.BinGet[mcproto.BinOpcode]
	bSet      = mctest.BinSet[mcproto.BinOpcode]
	bDelete   = mctest.BinDelete[mcproto.BinOpcode]
	bOK       = mctest.BinOK[mcproto.BinOpcode]
	bErr      = mctest.BinErr[mcproto.BinOpcode, mcproto.BinStatus]
)

// binMsg is a response as read off the wire.
type binMsg struct {
	magic, op            byte
	status               uint16
	opaque               uint32
	cas                  uint64
	extras, key, value   string
	keyLen, extLen, body int
}

// bread reads one response.
func (c *client) bread() binMsg {
	c.T.Helper()
	_ = c.NetConn.SetReadDeadline(time.Now().Add(15 * time.Second))
	h := make([]byte, 24)
	if _, err := io.ReadFull(c.Reader, h); err != nil {
		c.T.Fatalf("reading binary header: %v", err)
	}
	m := binMsg{
		magic: h[0], op: h[1],
		keyLen: int(binary.BigEndian.Uint16(h[2:])), extLen: int(h[4]),
		status: binary.BigEndian.Uint16(h[6:]),
		body:   int(binary.BigEndian.Uint32(h[8:])),
		opaque: binary.BigEndian.Uint32(h[12:]), cas: binary.BigEndian.Uint64(h[16:]),
	}
	body := make([]byte, m.body)
	if _, err := io.ReadFull(c.Reader, body); err != nil {
		c.T.Fatalf("reading binary body: %v", err)
	}
	m.extras = string(body[:m.extLen])
	m.key = string(body[m.extLen : m.extLen+m.keyLen])
	m.value = string(body[m.extLen+m.keyLen:])
	return m
}

// bhit reads a successful item response and checks all of it but the cas,
// which must be a reservation id (non-zero); it returns the cas.
func (c *client) bhit(op mcproto.BinOpcode, opaque uint32, flags uint32, key, value string) uint64 {
	c.T.Helper()
	m := c.bread()
	want := bresp(op, mcproto.BinStatusOK, opaque, m.cas, be32(flags), key, value)
	got := bresp(mcproto.BinOpcode(m.op), mcproto.BinStatus(m.status), m.opaque, m.cas, m.extras, m.key, m.value)
	if m.magic != 0x81 || got != want {
		c.T.Fatalf("item response mismatch:\n want %q\n  got %q (magic %#x)", want, got, m.magic)
	}
	if m.cas == 0 {
		c.T.Fatalf("item response with cas 0, want the reservation id")
	}
	return m.cas
}

// bsynced proves a binary connection is still in step.
func (c *client) bsynced() {
	c.T.Helper()
	c.Do(breq(mcproto.BinVersion, 0xfeed, 0, "", "", ""), bresp(mcproto.BinVersion, 0, 0xfeed, 0, "", "", Version))
}

// TestBinaryReplies walks every served opcode with byte-exact replies.
func TestBinaryReplies(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	c := g.dial()

	c.Do(bSet(mcproto.BinSet, 1, q, 42, "hello"), bOK(mcproto.BinSet, 1))
	c.Do(bSet(mcproto.BinSetQ, 2, q, 7, "abc"), "") // quiet: nothing on success
	c.bsynced()
	c.Do(bSet(mcproto.BinSet, 3, q, 0, ""), bOK(mcproto.BinSet, 3))

	// get reserves; while held, a second get is a miss.
	c.Send(bGet(mcproto.BinGet, 10, q))
	id := c.bhit(mcproto.BinGet, 10, 42, "", "hello")
	c.Do(bGet(mcproto.BinGet, 11, q), bErr(mcproto.BinGet, mcproto.BinStatusKeyNotFound, 11, "Not found"))
	c.Do(bGet(mcproto.BinGetK, 12, q), bresp(mcproto.BinGetK, mcproto.BinStatusKeyNotFound, 12, 0, "", q, ""))
	c.Do(bGet(mcproto.BinGetQ, 13, q), "")
	c.Do(bGet(mcproto.BinGetKQ, 14, q), "")
	c.Do(breq(mcproto.BinGATQ, 15, 0, be32(60), q, ""), "")
	c.Do(breq(mcproto.BinGATKQ, 16, 0, be32(60), q, ""), "")
	c.Do(breq(mcproto.BinGAT, 17, 0, be32(60), q, ""), bErr(mcproto.BinGAT, mcproto.BinStatusKeyNotFound, 17, "Not found"))
	c.Do(breq(mcproto.BinGATK, 18, 0, be32(60), q, ""), bresp(mcproto.BinGATK, mcproto.BinStatusKeyNotFound, 18, 0, "", q, ""))
	c.Do(breq(mcproto.BinNoop, 19, 0, "", "", ""), bOK(mcproto.BinNoop, 19))

	// touch answers with the held message's flags and reservation id.
	c.Do(breq(mcproto.BinTouch, 20, 0, be32(30), q, ""), bresp(mcproto.BinTouch, 0, 20, id, be32(42), "", ""))
	c.Do(bDelete(mcproto.BinDelete, 21, 0, q), bOK(mcproto.BinDelete, 21))
	c.Do(bDelete(mcproto.BinDelete, 22, 0, q), bErr(mcproto.BinDelete, mcproto.BinStatusKeyNotFound, 22, "Not found"))
	c.Do(bDelete(mcproto.BinDeleteQ, 23, 0, q), bErr(mcproto.BinDeleteQ, mcproto.BinStatusKeyNotFound, 23, "Not found"))
	c.Do(breq(mcproto.BinTouch, 24, 0, be32(30), q, ""), bErr(mcproto.BinTouch, mcproto.BinStatusKeyNotFound, 24, "Not found"))

	// getk returns the key; deleteq is silent on success.
	c.Send(bGet(mcproto.BinGetK, 30, q))
	c.bhit(mcproto.BinGetK, 30, 7, q, "abc")
	c.Do(bDelete(mcproto.BinDeleteQ, 31, 0, q), "")
	c.bsynced()
	// gat reserves with a lease; gatk returns the key.
	c.Send(breq(mcproto.BinGATK, 32, 0, be32(60), q, ""))
	c.bhit(mcproto.BinGATK, 32, 0, q, "")
	c.Do(bDelete(mcproto.BinDelete, 33, 0, q), bOK(mcproto.BinDelete, 33))
	c.Do(bGet(mcproto.BinGet, 34, q), bErr(mcproto.BinGet, mcproto.BinStatusKeyNotFound, 34, "Not found"))

	// The rest of the served opcodes.
	c.Do(breq(mcproto.BinVersion, 40, 0, "", "", ""), bresp(mcproto.BinVersion, 0, 40, 0, "", "", Version))
	c.Do(breq(mcproto.BinVerbosity, 41, 0, be32(1), "", ""), bOK(mcproto.BinVerbosity, 41))
	c.Do(breq(mcproto.BinFlush, 42, 0, "", "", ""), bOK(mcproto.BinFlush, 42))
	c.Do(breq(mcproto.BinFlush, 43, 0, be32(10), "", ""), bOK(mcproto.BinFlush, 43))
	c.Do(breq(mcproto.BinFlushQ, 44, 0, "", "", ""), "")
	c.bsynced()
	c.Do(breq(mcproto.BinQuit, 45, 0, "", "", ""), bOK(mcproto.BinQuit, 45))
	c.ExpectClosed()

	d := g.dial()
	d.bsynced()
	d.Do(breq(mcproto.BinQuitQ, 46, 0, "", "", ""), "")
	d.ExpectClosed()
}

// TestBinaryStat: the stat listing is the text one, entry by entry, ended
// by an empty entry; unknown groups are a miss.
func TestBinaryStat(t *testing.T) {
	g := startGateway(t, nil)
	c := g.dial()
	c.Send(breq(mcproto.BinStat, 7, 0, "", "", ""))
	names := map[string]string{}
	for {
		m := c.bread()
		if m.op != byte(mcproto.BinStat) || m.status != 0 || m.opaque != 7 || m.extLen != 0 {
			t.Fatalf("stat entry %+v", m)
		}
		if m.key == "" && m.value == "" {
			break
		}
		names[m.key] = m.value
	}
	for _, n := range []string{"pid", "uptime", "version", "curr_connections", "cmd_get", "get_hits", "bytes_read", "threads"} {
		if _, ok := names[n]; !ok {
			t.Errorf("stat %q missing from %v", n, names)
		}
	}
	if names["version"] != Version {
		t.Errorf("version %q", names["version"])
	}
	c.Send(breq(mcproto.BinStat, 8, 0, "", "settings", ""))
	n := 0
	for m := c.bread(); m.key != ""; m = c.bread() {
		n++
	}
	if n == 0 {
		t.Error("stat settings: no entries")
	}
	c.Do(breq(mcproto.BinStat, 9, 0, "", "bogus", ""), bErr(mcproto.BinStat, mcproto.BinStatusKeyNotFound, 9, "Not found"))
	c.bsynced()
}

// TestBinaryStatuses checks each error status of SPEC §2 and that the
// connection stays in step after each.
func TestBinaryStatuses(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxItemSize = 1024
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "q")
	c := g.dial()

	tests := []struct {
		name, send, want string
	}{
		{"too large", bSet(mcproto.BinSet, 1, q, 0, strings.Repeat("v", 1025)), bErr(mcproto.BinSet, mcproto.BinStatusTooLarge, 1, "Too large.")},
		{"too large quiet", bSet(mcproto.BinSetQ, 2, q, 0, strings.Repeat("v", 5000)), bErr(mcproto.BinSetQ, mcproto.BinStatusTooLarge, 2, "Too large.")},
		{"key 251", bGet(mcproto.BinGet, 3, strings.Repeat("k", 251)), bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 3, "Invalid arguments")},
		{"key with space", bGet(mcproto.BinGet, 4, "a b"), bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 4, "Invalid arguments")},
		{"empty key", bGet(mcproto.BinGet, 5, ""), bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 5, "Invalid arguments")},
		{"amq. key", bGet(mcproto.BinGetQ, 6, "amq.rabbitmq.trace"), bErr(mcproto.BinGetQ, mcproto.BinStatusInvalidArgs, 6, "Invalid arguments")},
		{"amq. set", bSet(mcproto.BinSetQ, 7, "amq.x", 0, "v"), bErr(mcproto.BinSetQ, mcproto.BinStatusInvalidArgs, 7, "Invalid arguments")},
		{"options on set", bSet(mcproto.BinSet, 8, q+"/open", 0, "v"), bErr(mcproto.BinSet, mcproto.BinStatusInvalidArgs, 8, "Invalid arguments")},
		{"bad kestrel option", bGet(mcproto.BinGet, 9, q+"/bogus"), bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 9, "Invalid arguments")},
		{"set without extras", breq(mcproto.BinSet, 10, 0, "", q, "v"), bErr(mcproto.BinSet, mcproto.BinStatusInvalidArgs, 10, "Invalid arguments")},
		{"get with extras", breq(mcproto.BinGet, 11, 0, "xxxx", q, ""), bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 11, "Invalid arguments")},
		{"noop with body", breq(mcproto.BinNoop, 12, 0, "", "", "x"), bErr(mcproto.BinNoop, mcproto.BinStatusInvalidArgs, 12, "Invalid arguments")},
		{"touch without exptime", breq(mcproto.BinTouch, 13, 0, "", q, ""), bErr(mcproto.BinTouch, mcproto.BinStatusInvalidArgs, 13, "Invalid arguments")},
		{"add", breq(mcproto.BinAdd, 20, 0, setExtras(0, 0), q, "v"), bErr(mcproto.BinAdd, mcproto.BinStatusNotSupported, 20, "Not supported")},
		{"replaceq", breq(mcproto.BinReplaceQ, 21, 0, setExtras(0, 0), q, "v"), bErr(mcproto.BinReplaceQ, mcproto.BinStatusNotSupported, 21, "Not supported")},
		{"append", breq(mcproto.BinAppend, 22, 0, "", q, "v"), bErr(mcproto.BinAppend, mcproto.BinStatusNotSupported, 22, "Not supported")},
		{"prependq", breq(mcproto.BinPrependQ, 23, 0, "", q, "v"), bErr(mcproto.BinPrependQ, mcproto.BinStatusNotSupported, 23, "Not supported")},
		{"incr", breq(mcproto.BinIncrement, 24, 0, strings.Repeat("\x00", 20), q, ""), bErr(mcproto.BinIncrement, mcproto.BinStatusNotSupported, 24, "Not supported")},
		{"decrq", breq(mcproto.BinDecrementQ, 25, 0, strings.Repeat("\x00", 20), q, ""), bErr(mcproto.BinDecrementQ, mcproto.BinStatusNotSupported, 25, "Not supported")},
		{"sasl list", breq(mcproto.BinSASLList, 26, 0, "", "", ""), bErr(mcproto.BinSASLList, mcproto.BinStatusNotSupported, 26, "Not supported")},
		{"sasl auth", breq(mcproto.BinSASLAuth, 27, 0, "", "PLAIN", "\x00u\x00p"), bErr(mcproto.BinSASLAuth, mcproto.BinStatusNotSupported, 27, "Not supported")},
		{"unknown", breq(0x50, 30, 0, "", "", "body"), bErr(0x50, mcproto.BinStatusUnknownCommand, 30, "Unknown command")},
		{"unknown 0xff", breq(0xff, 31, 0, "", "", ""), bErr(0xff, mcproto.BinStatusUnknownCommand, 31, "Unknown command")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.T = t
			c.Do(tt.send, tt.want)
			c.bsynced()
		})
	}
	c.T = t
	// Nothing was published by the refused sets.
	c.Do(bGet(mcproto.BinGet, 40, q), bErr(mcproto.BinGet, mcproto.BinStatusKeyNotFound, 40, "Not found"))
}

// TestBinaryNotStored: a set that nothing routes is 0x0005, quiet or not.
func TestBinaryNotStored(t *testing.T) {
	g := startGateway(t, yamlConfig(t, "auto_declare: {enabled: false}\n"))
	q := testbroker.Name(t, "q")
	c := g.dial()
	c.Do(bSet(mcproto.BinSet, 1, q, 0, "x"), bErr(mcproto.BinSet, mcproto.BinStatusNotStored, 1, "Not stored."))
	c.Do(bSet(mcproto.BinSetQ, 2, q, 0, "x"), bErr(mcproto.BinSetQ, mcproto.BinStatusNotStored, 2, "Not stored."))
	c.Do(bGet(mcproto.BinGetQ, 3, q), "")
	c.bsynced()
}

// TestBinaryBrokerDown: broker trouble is 0x0084 with the reason as body,
// never a miss.
func TestBinaryBrokerDown(t *testing.T) {
	cfg := testConfig()
	cfg.AMQP.URLs = []config.URL{config.URL("amqp://guest:guest@127.0.0.1:1/")}
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "down")
	c := g.dial()
	for i, req := range []string{
		bSet(mcproto.BinSet, 1, q, 0, "x"),
		bSet(mcproto.BinSetQ, 2, q, 0, "x"),
		bGet(mcproto.BinGet, 3, q),
		bGet(mcproto.BinGetQ, 4, q),
		bGet(mcproto.BinGetKQ, 5, q),
	} {
		c.Send(req)
		m := c.bread()
		if m.status != uint16(mcproto.BinStatusInternalError) || m.opaque != uint32(i+1) || m.value == "" || m.extLen != 0 || m.keyLen != 0 {
			t.Errorf("request %d with the broker down: %+v, want 0x0084 with a reason", i+1, m)
		}
		if strings.Contains(m.value, "guest") {
			t.Errorf("reason leaks the password: %q", m.value)
		}
	}
	c.Do(bDelete(mcproto.BinDelete, 9, 0, q), bErr(mcproto.BinDelete, mcproto.BinStatusKeyNotFound, 9, "Not found"))
}

// TestBinaryPipelined: many requests in one write, quiet misses answered
// by nothing, and the noop's reply ending the batch.
func TestBinaryPipelined(t *testing.T) {
	g := startGateway(t, nil)
	q1, q2, q3 := testbroker.Name(t, "a"), testbroker.Name(t, "b"), testbroker.Name(t, "c")
	c := g.dial()
	// A multi-set as clients pipeline it: setq..., noop.
	c.Do(bSet(mcproto.BinSetQ, 1, q1, 1, "one")+bSet(mcproto.BinSetQ, 2, q3, 3, "three")+breq(mcproto.BinNoop, 3, 0, "", "", ""),
		bOK(mcproto.BinNoop, 3))
	// A multi-get: getkq per key, then noop; only hits and the noop answer.
	c.Send(bGet(mcproto.BinGetKQ, 10, q1) + bGet(mcproto.BinGetKQ, 11, q2) + bGet(mcproto.BinGetKQ, 12, q3) + breq(mcproto.BinNoop, 13, 0, "", "", ""))
	id1 := c.bhit(mcproto.BinGetKQ, 10, 1, q1, "one")
	id3 := c.bhit(mcproto.BinGetKQ, 12, 3, q3, "three")
	c.Expect(bOK(mcproto.BinNoop, 13))
	if id1 == id3 {
		t.Fatalf("two reservations with id %d", id1)
	}
	// Misses only, then noop: the noop alone.
	c.Do(bGet(mcproto.BinGetQ, 20, q1)+bGet(mcproto.BinGetQ, 21, q2)+bGet(mcproto.BinGetKQ, 22, q3)+breq(mcproto.BinNoop, 23, 0, "", "", ""),
		bOK(mcproto.BinNoop, 23))
	// Mixed: deletes, a bad request and a version in one write, in order.
	c.Do(bDelete(mcproto.BinDeleteQ, 30, 0, q1)+bDelete(mcproto.BinDelete, 31, id3, q3)+bGet(mcproto.BinGet, 32, "")+
		bDelete(mcproto.BinDeleteQ, 33, 0, q2)+breq(mcproto.BinVersion, 34, 0, "", "", ""),
		bOK(mcproto.BinDelete, 31)+bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 32, "Invalid arguments")+
			bErr(mcproto.BinDeleteQ, mcproto.BinStatusKeyNotFound, 33, "Not found")+bresp(mcproto.BinVersion, 0, 34, 0, "", "", Version))
	// The same requests byte by byte.
	c.Send(bSet(mcproto.BinSetQ, 40, q2, 0, "2"))
	for _, b := range []byte(bGet(mcproto.BinGetK, 41, q2)) {
		c.Send(string([]byte{b}))
	}
	c.bhit(mcproto.BinGetK, 41, 0, q2, "2")
	c.Do(bDelete(mcproto.BinDelete, 42, 0, q2), bOK(mcproto.BinDelete, 42))
}

// TestBinaryOpaqueEcho: every reply carries its request's opaque,
// whatever its value.
func TestBinaryOpaqueEcho(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	c := g.dial()
	for _, o := range []uint32{0, 1, 0xdeadbeef, 0xffffffff} {
		c.Do(bSet(mcproto.BinSet, o, q, 0, "x"), bOK(mcproto.BinSet, o))
		c.Send(bGet(mcproto.BinGet, o, q))
		c.bhit(mcproto.BinGet, o, 0, "", "x")
		c.Do(bDelete(mcproto.BinDelete, o, 0, q), bOK(mcproto.BinDelete, o))
		c.Do(bGet(mcproto.BinGet, o, q), bErr(mcproto.BinGet, mcproto.BinStatusKeyNotFound, o, "Not found"))
		c.Do(breq(0x60, o, 0, "", "", ""), bErr(0x60, mcproto.BinStatusUnknownCommand, o, "Unknown command"))
		c.Do(breq(mcproto.BinNoop, o, 0, "", "", ""), bOK(mcproto.BinNoop, o))
	}
}

// TestBinaryFlagsRoundTrip: flags set in one framing read back in the
// other.
func TestBinaryFlagsRoundTrip(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	bin, text := g.dial(), g.dial()
	bin.Do(bSet(mcproto.BinSet, 1, q, 0xfffffffe, "from-binary"), bOK(mcproto.BinSet, 1))
	text.Do("get "+q+"\r\n", "VALUE "+q+" 4294967294 11\r\nfrom-binary\r\nEND\r\n")
	text.Do("delete "+q+"\r\n", "DELETED\r\n")
	text.Do("set "+q+" 12345 0 9\r\nfrom-text\r\n", "STORED\r\n")
	bin.Send(bGet(mcproto.BinGet, 2, q))
	bin.bhit(mcproto.BinGet, 2, 12345, "", "from-text")
	bin.Do(bDelete(mcproto.BinDelete, 3, 0, q), bOK(mcproto.BinDelete, 3))
}

// TestBinaryDeleteByCas: DELETE (and SET) with a cas acks that reservation
// from any connection, binary or text; a wrong id or queue is a miss.
func TestBinaryDeleteByCas(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	a, b, text := g.dial(), g.dial(), g.dial()
	a.Do(bSet(mcproto.BinSet, 1, q, 0, "m1"), bOK(mcproto.BinSet, 1))
	a.Do(bSet(mcproto.BinSet, 2, q, 0, "m2"), bOK(mcproto.BinSet, 2))
	a.Send(bGet(mcproto.BinGet, 3, q))
	id := a.bhit(mcproto.BinGet, 3, 0, "", "m1")

	b.Do(bDelete(mcproto.BinDelete, 4, id+1, q), bErr(mcproto.BinDelete, mcproto.BinStatusKeyNotFound, 4, "Not found"))
	b.Do(bDelete(mcproto.BinDelete, 5, id, q+".other"), bErr(mcproto.BinDelete, mcproto.BinStatusKeyNotFound, 5, "Not found"))
	b.Do(bDelete(mcproto.BinDeleteQ, 6, id, q), "")
	b.bsynced()
	b.Do(bDelete(mcproto.BinDelete, 7, id, q), bErr(mcproto.BinDelete, mcproto.BinStatusKeyNotFound, 7, "Not found"))
	// The owner's reservation went with it.
	a.Do(bDelete(mcproto.BinDelete, 8, 0, q), bErr(mcproto.BinDelete, mcproto.BinStatusKeyNotFound, 8, "Not found"))

	// A text gets' cas acked by a binary set-with-cas; the value is ignored.
	text.Send("gets " + q + "\r\n")
	var key string
	var flags, n int
	var id2 uint64
	if _, err := fmt.Sscanf(text.Line(), "VALUE %s %d %d %d", &key, &flags, &n, &id2); err != nil {
		t.Fatalf("gets header: %v", err)
	}
	text.Expect("m2\r\nEND\r\n")
	b.Do(breq(mcproto.BinSet, 9, id2, setExtras(0, 0), q, "ignored"), bOK(mcproto.BinSet, 9))
	b.Do(breq(mcproto.BinSet, 10, id2, setExtras(0, 0), q, "ignored"), bErr(mcproto.BinSet, mcproto.BinStatusKeyNotFound, 10, "Not found"))
	text.Do("delete "+q+"\r\n", "NOT_FOUND\r\n")
	// Nothing left: the ignored value was not published.
	b.Do(bGet(mcproto.BinGet, 11, q), bErr(mcproto.BinGet, mcproto.BinStatusKeyNotFound, 11, "Not found"))
}

// TestBinaryDisconnectRequeues: a binary client's reservation goes back
// when its connection closes.
func TestBinaryDisconnectRequeues(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	a, b := g.dial(), g.dial()
	a.Do(bSet(mcproto.BinSet, 1, q, 9, "job"), bOK(mcproto.BinSet, 1))
	a.Send(bGet(mcproto.BinGet, 2, q))
	a.bhit(mcproto.BinGet, 2, 9, "", "job")
	b.Do(bGet(mcproto.BinGet, 3, q), bErr(mcproto.BinGet, mcproto.BinStatusKeyNotFound, 3, "Not found"))
	a.Close()
	var m binMsg
	testbroker.Eventually(t, 5*time.Second, "the message back in the queue", func() bool {
		b.Send(bGet(mcproto.BinGet, 4, q))
		m = b.bread()
		return m.status == 0
	})
	if m.value != "job" || m.extras != be32(9) {
		t.Fatalf("redelivered %+v", m)
	}
	b.Do(bDelete(mcproto.BinDelete, 5, 0, q), bOK(mcproto.BinDelete, 5))
}

// TestBinaryFraming: what cannot be resynchronised closes the connection;
// nothing else does, and other connections never notice.
func TestBinaryFraming(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxItemSize = 1024
	g := startGateway(t, cfg)
	bystander := g.dial()
	bystander.bsynced()

	t.Run("absurd body length", func(t *testing.T) {
		c := dialClient(t, g.addr)
		h := []byte(bGet(mcproto.BinGet, 1, "k"))
		binary.BigEndian.PutUint32(h[8:], 0xffffffff)
		c.Send(string(h[:24]))
		c.Expect(bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 1, "Invalid arguments"))
		c.ExpectClosed()
	})
	t.Run("key longer than body", func(t *testing.T) {
		c := dialClient(t, g.addr)
		h := []byte(bGet(mcproto.BinGet, 2, "kkkk"))
		binary.BigEndian.PutUint32(h[8:], 2) // body 2 < key 4
		c.Send(string(h[:26]))
		c.Expect(bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, 2, "Invalid arguments"))
		c.bsynced()
	})
	t.Run("bad magic later", func(t *testing.T) {
		c := dialClient(t, g.addr)
		c.bsynced()
		c.Send("get x\r\n" + strings.Repeat(" ", 17))
		c.ExpectClosed()
	})
	t.Run("huge set value discarded", func(t *testing.T) {
		c := dialClient(t, g.addr)
		c.Do(bSet(mcproto.BinSet, 3, "k", 0, strings.Repeat("v", 3<<20)), bErr(mcproto.BinSet, mcproto.BinStatusTooLarge, 3, "Too large."))
		c.bsynced()
	})
	t.Run("truncated", func(t *testing.T) {
		c := dialClient(t, g.addr)
		c.Send(bSet(mcproto.BinSet, 4, "k", 0, "value")[:30])
		c.NetConn.(interface{ CloseWrite() error }).CloseWrite()
		c.ExpectClosed()
	})
	bystander.bsynced()
}
