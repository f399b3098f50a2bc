package faults

import (
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
)

// goodClient is a well-behaved client that runs alongside the fuzz on a
// queue of its own, which nobody else touches: it knows exactly what the
// queue holds and what it holds of it, so every reply has one right
// value. No fault is injected in the socket fuzz test, so a SERVER_ERROR
// is wrong too: a hostile neighbour must cost it nothing.
type goodClient struct {
	f    framing
	addr string
	q    string
	rng  *rand.Rand
	c    *huntConn
	// other is a second connection, which acks by id.
	other *huntConn

	// The model: the queue's messages in order, and whether c holds the
	// first one (and its reservation id).
	queue   []string
	held    bool
	heldCas uint64

	// open is the gateway's count of reservations open on q: a dropped
	// connection's reservation has gone back once it is 0.
	open func() float64

	seq, ops int
	// trace is what the last operations did, for a failure message.
	trace []string
	// slowest is the longest an operation took, and which.
	slowest     time.Duration
	slowestWhat string
	// stored counts the messages that got STORED; acked those deleted.
	stored, acked int
}

func (gc *goodClient) fail(format string, args ...any) error {
	return fmt.Errorf("well-behaved %s client on %s, op %d (queue %d messages, held %v): %s\nlast operations:\n%s",
		gc.f, gc.q, gc.ops, len(gc.queue), gc.held, fmt.Sprintf(format, args...), strings.Join(gc.trace, "\n"))
}

// note records an operation and the model after it.
func (gc *goodClient) note(what string) {
	head := ""
	if len(gc.queue) > 0 {
		head = gc.queue[0]
	}
	gc.trace = append(gc.trace, fmt.Sprintf("  %d %s: %d queued, head %q, held %v", gc.ops, what, len(gc.queue), head, gc.held))
	if len(gc.trace) > 15 {
		gc.trace = gc.trace[1:]
	}
}

func (gc *goodClient) run(deadline time.Time) (err error) {
	if gc.c, err = dialHunt(gc.addr, gc.f); err != nil {
		return err
	}
	if gc.other, err = dialHunt(gc.addr, gc.f); err != nil {
		return err
	}
	defer func() {
		gc.c.close()
		gc.other.close()
	}()
	for time.Now().Before(deadline) {
		gc.ops++
		var what string
		start := time.Now()
		switch r := gc.rng.IntN(100); {
		case r < 28:
			what, err = "set", gc.set()
		case r < 55:
			what, err = "get", gc.get()
		case r < 75:
			what, err = "delete", gc.del()
		case r < 81:
			what, err = "give back", gc.giveBack()
		case r < 86:
			what, err = "touch", gc.touch()
		case r < 92:
			what, err = "ack by id", gc.ackByID()
		case r < 97:
			what, err = "3 pipelined sets", gc.pipelinedSets()
		default:
			what, err = "reconnect", gc.reconnect()
		}
		if err != nil {
			return err
		}
		if d := time.Since(start); d > gc.slowest {
			gc.slowest, gc.slowestWhat = d, what
		}
		gc.note(what)
	}
	return nil
}

func (gc *goodClient) set() error {
	gc.seq++
	body := fmt.Sprintf("good-%s-%d", gc.f, gc.seq)
	out, reply, err := gc.c.set(gc.q, body)
	if err != nil {
		return gc.fail("set: %v", err)
	}
	if out != outStored {
		return gc.fail("set: %v %q, want stored", out, reply)
	}
	gc.queue = append(gc.queue, body)
	gc.stored++
	return nil
}

// get reserves the head of the queue; a connection that holds it already
// gets a miss, as does one of an empty queue.
func (gc *goodClient) get() error {
	key := gc.q
	if !gc.held && len(gc.queue) == 0 && gc.rng.IntN(3) == 0 {
		key += "/t=20" // a short wait that comes to nothing
	}
	h, err := gc.c.get(key, 0)
	if err != nil {
		return gc.fail("get %s: %v", key, err)
	}
	return gc.gotten(h)
}

func (gc *goodClient) gotten(h *hit) error {
	switch {
	case gc.held || len(gc.queue) == 0:
		if h != nil {
			return gc.fail("get: a hit %q, want a miss", h.body)
		}
	case h == nil:
		return gc.fail("get: a miss, want %q", gc.queue[0])
	case h.body != gc.queue[0]:
		return gc.fail("get: %q, want the head %q", h.body, gc.queue[0])
	case h.cas == 0:
		return gc.fail("get: no reservation id")
	default:
		gc.held, gc.heldCas = true, h.cas
	}
	return nil
}

func (gc *goodClient) del() error {
	ok, err := gc.c.del(gc.q, 0)
	if err != nil {
		return gc.fail("delete: %v", err)
	}
	if ok != gc.held {
		return gc.fail("delete: acked %v, want %v", ok, gc.held)
	}
	gc.ack()
	return nil
}

func (gc *goodClient) ack() {
	if gc.held {
		gc.queue, gc.held = gc.queue[1:], false
		gc.acked++
	}
}

// giveBack requeues the reservation now (touch -1, or kestrel's /abort);
// binary has neither, and touches instead.
func (gc *goodClient) giveBack() error {
	if gc.f == binaryFraming {
		return gc.touch()
	}
	if gc.rng.IntN(2) == 0 {
		h, err := gc.c.get(gc.q+"/abort", 0)
		if err != nil || h != nil {
			return gc.fail("get /abort: %v %v, want END", h, err)
		}
		gc.held = false
		return nil
	}
	ok, err := gc.c.touch(gc.q, -1)
	if err != nil {
		return gc.fail("touch -1: %v", err)
	}
	if ok != gc.held {
		return gc.fail("touch -1: touched %v, want %v", ok, gc.held)
	}
	gc.held = false
	return nil
}

func (gc *goodClient) touch() error {
	ok, err := gc.c.touch(gc.q, 60+gc.rng.IntN(60))
	if err != nil {
		return gc.fail("touch: %v", err)
	}
	if ok != gc.held {
		return gc.fail("touch: touched %v, want %v", ok, gc.held)
	}
	return nil
}

// ackByID acks the reservation from the other connection by its id (cas,
// md C<id>, binary DELETE with cas); without one, a made-up id must not
// ack anything.
func (gc *goodClient) ackByID() error {
	id := gc.heldCas
	if !gc.held {
		id = gc.rng.Uint64() | 1
	}
	ok, err := gc.other.del(gc.q, id)
	if err != nil {
		return gc.fail("ack by id: %v", err)
	}
	if ok != gc.held {
		return gc.fail("ack by id %d from another connection: acked %v, want %v", id, ok, gc.held)
	}
	gc.ack()
	// The holder's own delete finds nothing now.
	if ok, err := gc.c.del(gc.q, 0); err != nil || ok {
		return gc.fail("delete after an ack by id: %v %v, want not found", ok, err)
	}
	return nil
}

// pipelinedSets sends three sets in one write and reads the replies
// after; binary sends quiet sets and a noop, and only the noop answers.
func (gc *goodClient) pipelinedSets() error {
	var bodies []string
	var b strings.Builder
	for range 3 {
		gc.seq++
		body := fmt.Sprintf("good-%s-%d", gc.f, gc.seq)
		bodies = append(bodies, body)
		switch gc.f {
		case binaryFraming:
			b.WriteString(mctest.BinFrame(0x80, 0x11, 0, 9, 0, be32(0)+be32(0), gc.q, body))
		case metaFraming:
			fmt.Fprintf(&b, "ms %s %d\r\n%s\r\n", gc.q, len(body), body)
		default:
			fmt.Fprintf(&b, "set %s 0 0 %d\r\n%s\r\n", gc.q, len(body), body)
		}
	}
	if gc.f == binaryFraming {
		b.WriteString(mctest.BinFrame(0x80, 0x0a, 0, 10, 0, "", "", ""))
	}
	if err := gc.c.send(b.String()); err != nil {
		return gc.fail("pipelined sets: %v", err)
	}
	if gc.f == binaryFraming {
		h := make([]byte, 24)
		_ = gc.c.nc.SetReadDeadline(time.Now().Add(mctest.IOTimeout))
		if _, err := io.ReadFull(gc.c.r, h); err != nil {
			return gc.fail("pipelined quiet sets: %v", err)
		}
		// Only the noop answers: a quiet set that failed would answer
		// first, with its status.
		if want := mctest.BinFrame(0x81, 0x0a, 0, 10, 0, "", "", ""); string(h) != want {
			return gc.fail("pipelined quiet sets: reply %x, want the noop's %x", h, want)
		}
	} else {
		want := "STORED"
		if gc.f == metaFraming {
			want = "HD"
		}
		for i := range bodies {
			l, err := gc.c.line()
			if err != nil || l != want {
				return gc.fail("pipelined set %d: %q %v, want %s", i, l, err, want)
			}
		}
	}
	gc.queue = append(gc.queue, bodies...)
	gc.stored += len(bodies)
	return nil
}

// reconnect drops the connection: what it held goes back, to the head,
// once the gateway noticed the close (on its own time: until then a get
// would return the next message).
func (gc *goodClient) reconnect() error {
	gc.c.close()
	c, err := dialHunt(gc.addr, gc.f)
	if err != nil {
		return gc.fail("redial: %v", err)
	}
	gc.c = c
	if !gc.held {
		return nil
	}
	gc.held = false
	for end := time.Now().Add(10 * time.Second); gc.open() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			return gc.fail("the reservation of a closed connection was not given back within 10s")
		}
	}
	return gc.get()
}
