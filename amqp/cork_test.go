package amqp

import (
	"bytes"
	"net"
	"testing"
)

// writeRecorder records each write that reaches the socket.
type writeRecorder struct {
	net.Conn
	writes [][]byte
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestCorkBatchesWritesWhileHeld(t *testing.T) {
	rec := &writeRecorder{}
	c := newCorkConn(rec)
	_, _ = c.Write([]byte("a"))
	if len(rec.writes) != 1 {
		t.Fatalf("uncorked write: %d socket writes, want 1", len(rec.writes))
	}
	c.hold()
	c.hold() // two writers share the cork
	_, _ = c.Write([]byte("b"))
	_, _ = c.Write([]byte("c"))
	if err := c.release(); err != nil || len(rec.writes) != 1 {
		t.Fatalf("after the first release: %d socket writes (err %v), want still 1", len(rec.writes), err)
	}
	_, _ = c.Write([]byte("d"))
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 2 || !bytes.Equal(rec.writes[1], []byte("bcd")) {
		t.Fatalf("socket writes %q, want [a bcd]", rec.writes)
	}
	// Past the limit a held cork writes through, in order.
	c.limit = 4
	c.hold()
	_, _ = c.Write([]byte("12"))
	_, _ = c.Write([]byte("345"))
	_ = c.release()
	got := bytes.Join(rec.writes[2:], nil)
	if !bytes.Equal(got, []byte("12345")) {
		t.Fatalf("over the limit wrote %q, want 12345 in order", got)
	}
}
