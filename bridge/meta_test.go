package bridge

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// mgCas sends "mg <key> v c" style lines and returns the cas from the
// reply "VA <n> c<id> ..." after checking the rest of it.
func mgCas(c *client, cmd, wantPrefix, wantSuffix, data string) uint64 {
	c.T.Helper()
	c.Send(cmd)
	line := c.Line()
	rest, ok := strings.CutPrefix(line, wantPrefix)
	if !ok {
		c.T.Fatalf("reply %q, want prefix %q", line, wantPrefix)
	}
	var id uint64
	var tail string
	if i := strings.IndexByte(rest, ' '); i >= 0 {
		rest, tail = rest[:i], rest[i:]
	}
	if _, err := fmt.Sscanf(rest, "%d", &id); err != nil || id == 0 {
		c.T.Fatalf("reply %q: no reservation id after %q", line, wantPrefix)
	}
	if tail != wantSuffix {
		c.T.Fatalf("reply %q: flags after the cas %q, want %q", line, tail, wantSuffix)
	}
	if data != "" {
		c.Expect(data)
	}
	return id
}

// TestMetaReplies checks the exact bytes of mg, ms, md and mn.
func TestMetaReplies(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	c := g.dial()

	c.Do("ms "+q+" 5 F42 T0\r\nhello\r\n", "HD\r\n")
	c.Do("ms "+q+" 3 c k O77 MS\r\nabc\r\n", "HD c0 k"+q+" O77\r\n")
	c.Do("ms "+q+" 0\r\n\r\n", "HD\r\n")
	c.Do("mn\r\n", "MN\r\n")

	// mg v reserves; the flags come back in the order asked.
	c.Do("mg "+q+" v f\r\n", "VA 5 f42\r\nhello\r\n")
	c.Do("mg "+q+" v f\r\n", "EN\r\n") // held: a miss
	c.Do("mg "+q+" v k O9 c\r\n", "EN k"+q+" O9\r\n")
	c.Do("md "+q+"\r\n", "HD\r\n")
	c.Do("md "+q+" O1 k\r\n", "NF O1 k"+q+"\r\n")
	id := mgCas(c, "mg "+q+" s v t f O5 k h l u c\r\n", "VA 3 s3 t-1 f0 O5 k"+q+" c", "", "abc\r\n")
	// mg without v reports the held reservation.
	c.Do("mg "+q+"\r\n", "HD\r\n")
	c.Do("mg "+q+" k f s t O3\r\n", "HD k"+q+" f0 s3 t-1 O3\r\n")
	c.Do(fmt.Sprintf("mg %s c\r\n", q), fmt.Sprintf("HD c%d\r\n", id))
	c.Do("md "+q+" q\r\n", "")
	c.Do("mn\r\n", "MN\r\n")
	c.Do("mg "+q+"\r\n", "EN\r\n")
	c.Do("mg "+q+" v\r\n", "VA 0\r\n\r\n")
	c.Do("md "+q+"\r\n", "HD\r\n")
	c.Do("mg "+q+" v\r\n", "EN\r\n")

	// Flags meaningless to a queue are ignored, unknown ones too.
	c.Do("ms "+q+" 1 I E99 N30 Z x S5 MA\r\nx\r\n", "HD\r\n")
	c.Do("mg "+q+" v E5 N30 R10 Z W X q\r\n", "VA 1\r\nx\r\n")
	c.Do("md "+q+" I x Z T30\r\n", "HD\r\n")
	c.Do("mn extra tokens\r\n", "MN\r\n")
}

// TestMetaErrors: memcached's error spellings, and the connection in step
// after each (a refused ms still swallows its data block).
func TestMetaErrors(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxItemSize = 1024
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "q")
	c := g.dial()
	for _, tt := range []struct{ send, want string }{
		{"mg\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"md\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"ms " + q + "\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"ms " + q + " -1\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"mg " + strings.Repeat("k", 251) + " v\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"mg amq.x v\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"mg " + q + "/bogus v\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"mg " + q + "/open\r\n", "CLIENT_ERROR bad command line format\r\n"}, // options only when it reserves
		{"md " + q + "/close\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"mg " + q + " v Tabc\r\n", "CLIENT_ERROR bad token in command line format\r\n"},
		{"mg " + q + " O" + strings.Repeat("9", 32) + "\r\n", "CLIENT_ERROR opaque token too long\r\n"},
		{"mg Zm9v= b v\r\n", "CLIENT_ERROR error decoding key\r\n"},
		{"mg " + base64.StdEncoding.EncodeToString([]byte("a b")) + " b v\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"md " + q + " Cx\r\n", "CLIENT_ERROR bad token in command line format\r\n"},
		{"ms " + q + " 3 Fx\r\nabc\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"ms " + q + " 3 F4294967296\r\nabc\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"ms " + q + " 3 MZ\r\nabc\r\n", "CLIENT_ERROR invalid mode for ms M token\r\n"},
		{"ms " + q + " 3 M\r\nabc\r\n", "CLIENT_ERROR incorrect length for M token\r\n"},
		{"ms " + q + " 3 T\r\nabc\r\n", "CLIENT_ERROR bad token in command line format\r\n"},
		{"ms amq.x 3\r\nabc\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"ms " + q + "/open 3 q\r\nabc\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"ms " + q + " 3\r\nabcde\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n"}, // as memcached: the rest of the line is read as a command
		{"ms " + q + " 2000 q\r\n" + strings.Repeat("v", 2000) + "\r\n", "SERVER_ERROR object too large for cache\r\n"},
	} {
		c.Do(tt.send, tt.want)
		c.synced()
	}
	// None of the refused sets published anything.
	c.Do("mg "+q+" v\r\n", "EN\r\n")
}

// TestMetaBase64Keys: b decodes the key; k echoes it as sent, with b.
func TestMetaBase64Keys(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	enc := base64.StdEncoding.EncodeToString([]byte(q))
	c := g.dial()
	c.Do("ms "+enc+" 3 b k F6\r\nb64\r\n", "HD k"+enc+" b\r\n")
	// The decoded key is the queue: text get sees it.
	text := g.dial()
	text.Do("get "+q+"\r\n", "VALUE "+q+" 6 3\r\nb64\r\nEND\r\n")
	text.Do("delete "+q+"\r\n", "DELETED\r\n")
	c.Do("ms "+enc+" 2 b\r\nhi\r\n", "HD\r\n")
	c.Do("mg "+enc+" b v k f\r\n", "VA 2 k"+enc+" b f0\r\nhi\r\n")
	c.Do("mg "+enc+" b k\r\n", "HD k"+enc+" b\r\n")
	c.Do("md "+enc+" b k\r\n", "HD k"+enc+" b\r\n")
	c.Do("mg "+enc+" b v k\r\n", "EN k"+enc+" b\r\n")
}

// TestMetaQuiet: q hides HD (and mg's EN) but never NF, NS or errors; mn
// ends a quiet batch.
func TestMetaQuiet(t *testing.T) {
	g := startGateway(t, nil)
	q1, q2 := testbroker.Name(t, "a"), testbroker.Name(t, "b")
	empty := testbroker.Name(t, "empty") // auto-declared by the misses; deleted at cleanup
	c := g.dial()
	// A pipelined quiet batch, as dalli's multi-get and quiet mode send it.
	c.Do("ms "+q1+" 1 q F1\r\n1\r\nms "+q2+" 1 q\r\n2\r\nmn\r\n", "MN\r\n")
	c.Do("mg "+q1+" v f k q\r\nmg "+empty+" v f k q\r\nmg "+q2+" v f k q\r\nmn\r\n",
		"VA 1 f1 k"+q1+"\r\n1\r\nVA 1 f0 k"+q2+"\r\n2\r\nMN\r\n")
	c.Do("mg "+q1+" q\r\nmg "+q1+" T30 q\r\nmg "+empty+" q\r\nmg "+empty+" T30 q\r\nmn\r\n", "MN\r\n")
	c.Do("md "+q1+" q\r\nmd "+q1+" q\r\nmd "+q2+" q\r\nmn\r\n", "NF\r\nMN\r\n")
	c.Do("ms amq.x 1 q\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n")
	c.Do("mg "+q1+" v q\r\nmn\r\n", "MN\r\n")
}

// TestMetaDeleteByID: md C<id> (and ms C<id>, as text cas) ack that
// reservation from any connection; NF for a wrong id or queue.
func TestMetaDeleteByID(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	a, b := g.dial(), g.dial()
	a.Do("ms "+q+" 2\r\nm1\r\n", "HD\r\n")
	a.Do("ms "+q+" 2\r\nm2\r\n", "HD\r\n")
	id := mgCas(a, "mg "+q+" v c\r\n", "VA 2 c", "", "m1\r\n")
	b.Do(fmt.Sprintf("md %s C%d\r\n", q, id+1), "NF\r\n")
	b.Do(fmt.Sprintf("md %s.other C%d\r\n", q, id), "NF\r\n")
	b.Do(fmt.Sprintf("md %s C%d q\r\n", q, id), "")
	b.Do(fmt.Sprintf("md %s C%d k\r\n", q, id), "NF k"+q+"\r\n")
	a.Do("md "+q+"\r\n", "NF\r\n") // the owner's reservation went with it
	a.Do("mg "+q+"\r\n", "EN\r\n")

	// dalli's cas: mg c, then ms C<cas>; the data block is ignored.
	id2 := mgCas(a, "mg "+q+" v c f\r\n", "VA 2 c", " f0", "m2\r\n")
	b.Do(fmt.Sprintf("ms %s 7 C%d\r\nignored\r\n", q, id2), "HD\r\n")
	b.Do(fmt.Sprintf("ms %s 7 C%d\r\nignored\r\n", q, id2), "NF\r\n")
	a.Do("mg "+q+" v\r\n", "EN\r\n") // nothing was published
}

// TestMetaTouchLease: mg T<secs> without v sets the lease of the held
// reservation and never reserves anything itself.
func TestMetaTouchLease(t *testing.T) {
	q := testbroker.Name(t, "q")
	cfg := yamlConfig(t, fmt.Sprintf("queues:\n  - name: %s\n    reservation_timeout: 300ms\n", q))
	g := startGateway(t, cfg)
	a, b := g.dial(), g.dial()
	a.Do("ms "+q+" 1\r\nm\r\n", "HD\r\n")

	// Without v nothing is reserved: another connection still gets it.
	a.Do("mg "+q+"\r\n", "EN\r\n")
	a.Do("mg "+q+" T60\r\n", "EN\r\n")
	a.Do("mg "+q+" f s T60 k\r\n", "EN k"+q+"\r\n")
	b.Do("mg "+q+" v\r\n", "VA 1\r\nm\r\n")
	b.Do("md "+q+"\r\n", "HD\r\n")

	// A reservation whose lease is extended outlives the queue's 300ms.
	a.Do("ms "+q+" 1\r\nn\r\n", "HD\r\n")
	start := time.Now()
	a.Do("mg "+q+" v\r\n", "VA 1\r\nn\r\n")
	a.Do("mg "+q+" T60 f\r\n", "HD f0\r\n")
	// Proof without sleeping: the timer of the queue's lease would have
	// requeued by now; keep polling past it and the message stays held.
	for time.Since(start) < 900*time.Millisecond {
		b.Do("mg "+q+" v\r\n", "EN\r\n")
		a.Do("mg "+q+"\r\n", "HD\r\n")
	}
	// T-1 requeues now (memcached: a negative TTL expires the item).
	a.Do("mg "+q+" T-1\r\n", "HD\r\n")
	a.Do("mg "+q+"\r\n", "EN\r\n")
	testbroker.Eventually(t, 5*time.Second, "the requeued message", func() bool {
		b.Send("mg " + q + " v\r\n")
		return b.Line() != "EN"
	})
	b.Expect("n\r\n")
	b.Do("md "+q+"\r\n", "HD\r\n")

	// mg v T<secs> reserves with that lease (like gat): it outlives 300ms.
	a.Do("ms "+q+" 1\r\no\r\n", "HD\r\n")
	start = time.Now()
	a.Do("mg "+q+" v T60\r\n", "VA 1\r\no\r\n")
	for time.Since(start) < 900*time.Millisecond {
		b.Do("mg "+q+" v\r\n", "EN\r\n")
	}
	a.Do("md "+q+"\r\n", "HD\r\n")
}

// TestMetaDisconnectRequeues: a meta client's reservation goes back when
// it disconnects.
func TestMetaDisconnectRequeues(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "q")
	a, b := g.dial(), g.dial()
	a.Do("ms "+q+" 3 F2\r\njob\r\n", "HD\r\n")
	a.Do("mg "+q+" v\r\n", "VA 3\r\njob\r\n")
	a.Close()
	testbroker.Eventually(t, 5*time.Second, "the message back in the queue", func() bool {
		b.Send("mg " + q + " v f\r\n")
		return b.Line() != "EN"
	})
	b.Expect("job\r\n")
	b.Do("md "+q+"\r\n", "HD\r\n")
}
