package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// gomemcache is the Go client users point at mcbridge. It always sends
// `gets` (so every hit carries the reservation id as its CasID) and pools
// connections: a worker acks with CompareAndSwap(item), which acks by id
// from whatever pooled connection it happens to use.

// gmcWorkerClient is the recommended worker setup: MaxIdleConns at least
// the number of goroutines sharing the client, because a connection the
// pool closes for being surplus requeues the message it holds; and a
// Timeout above the broker's confirm latency (gomemcache's default is
// 500ms, and a set waits for the publisher confirm).
func gmcWorkerClient(t testing.TB, addr string, workers int) *memcache.Client {
	t.Helper()
	mc := memcache.New(addr)
	mc.MaxIdleConns = workers
	mc.Timeout = 5 * time.Second
	t.Cleanup(func() { _ = mc.Close() })
	return mc
}

func TestGomemcacheSetGetFlags(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "flags")
	mc := gmcWorkerClient(t, g.addr, 1)

	cases := []struct {
		flags uint32
		value []byte
	}{
		{0, []byte("zero")},
		{1, []byte("one")},
		{42, []byte("forty-two")},
		{1 << 31, []byte("top bit")},
		{4294967295, []byte("max uint32")},
		{7, []byte{}},
		{9, []byte("bin\x00\x01\xff\r\nEND\r\n")},
	}
	for _, c := range cases {
		if err := mc.Set(&memcache.Item{Key: q, Value: c.value, Flags: c.flags}); err != nil {
			t.Fatalf("Set flags=%d: %v", c.flags, err)
		}
	}
	seen := map[uint64]bool{}
	for _, c := range cases {
		it, err := mc.Get(q)
		if err != nil {
			t.Fatalf("Get (want flags=%d): %v", c.flags, err)
		}
		if it.Key != q || !bytes.Equal(it.Value, c.value) || it.Flags != c.flags {
			t.Fatalf("Get = {key %q value %q flags %d}, want {key %q value %q flags %d}", it.Key, it.Value, it.Flags, q, c.value, c.flags)
		}
		if it.CasID == 0 || seen[it.CasID] {
			t.Fatalf("CasID %d is zero or reused", it.CasID)
		}
		seen[it.CasID] = true
		// The reservation is held by the pooled connection: ack it (by
		// id) before the next Get, which would otherwise be a miss.
		if err := mc.CompareAndSwap(it); err != nil {
			t.Fatalf("CompareAndSwap (ack) flags=%d: %v", c.flags, err)
		}
	}
	if _, err := mc.Get(q); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("Get on the drained queue: err = %v, want ErrCacheMiss", err)
	}
	if n := testbroker.QueueDepth(t, q); n != 0 {
		t.Fatalf("queue holds %d messages after every one was acked", n)
	}
}

func TestGomemcacheEmptyQueueMiss(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "empty")
	mc := gmcWorkerClient(t, g.addr, 1)
	for range 3 {
		if it, err := mc.Get(q); !errors.Is(err, memcache.ErrCacheMiss) {
			t.Fatalf("Get on empty queue = %+v, %v; want ErrCacheMiss", it, err)
		}
	}
}

func TestGomemcacheGetMulti(t *testing.T) {
	g := startGateway(t, nil)
	mc := gmcWorkerClient(t, g.addr, 1)
	queues := []string{testbroker.Name(t, "a"), testbroker.Name(t, "b"), testbroker.Name(t, "c")}
	empty := testbroker.Name(t, "empty")
	for i, q := range queues {
		if err := mc.Set(&memcache.Item{Key: q, Value: []byte("msg-" + q), Flags: uint32(100 + i)}); err != nil {
			t.Fatalf("Set %s: %v", q, err)
		}
	}
	got, err := mc.GetMulti(append([]string{empty}, queues...))
	if err != nil {
		t.Fatalf("GetMulti: %v", err)
	}
	if len(got) != len(queues) {
		t.Fatalf("GetMulti returned %d items, want %d (the empty queue is a miss): %v", len(got), len(queues), got)
	}
	ids := map[uint64]bool{}
	for i, q := range queues {
		it := got[q]
		if it == nil {
			t.Fatalf("GetMulti: no item for %s", q)
		}
		if string(it.Value) != "msg-"+q || it.Flags != uint32(100+i) {
			t.Fatalf("GetMulti[%s] = value %q flags %d", q, it.Value, it.Flags)
		}
		if ids[it.CasID] {
			t.Fatalf("two reservations share id %d", it.CasID)
		}
		ids[it.CasID] = true
	}
	for _, q := range queues {
		if err := mc.CompareAndSwap(got[q]); err != nil {
			t.Fatalf("CompareAndSwap %s: %v", q, err)
		}
		if n := testbroker.QueueDepth(t, q); n != 0 {
			t.Fatalf("queue %s holds %d messages after the ack", q, n)
		}
	}
}

func TestGomemcacheCompareAndSwapAcks(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "cas")
	mc := gmcWorkerClient(t, g.addr, 1)
	if err := mc.Set(&memcache.Item{Key: q, Value: []byte("job-1"), Flags: 3}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	it, err := mc.Get(q)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if err := mc.CompareAndSwap(it); err != nil {
		t.Fatalf("CompareAndSwap after Get: %v, want nil (STORED)", err)
	}
	// A new client (new connection) sees nothing: the message is gone,
	// not merely held.
	other := gmcWorkerClient(t, g.addr, 1)
	if it, err := other.Get(q); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("Get from a new client after the ack = %+v, %v; want ErrCacheMiss", it, err)
	}
	// And the broker agrees.
	ch := testbroker.Channel(t)
	if m, ok, err := ch.Get(q, true); err != nil || ok {
		t.Fatalf("raw basic.get after the ack: ok=%v body=%q err=%v; want empty", ok, m.Body, err)
	}
}

func TestGomemcacheCompareAndSwapEndedReservation(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "cas-ended")
	mc := gmcWorkerClient(t, g.addr, 1)

	// gomemcache maps the NOT_FOUND reply of cas to ErrCacheMiss (and
	// EXISTS to ErrCASConflict, NOT_STORED to ErrNotStored): mcbridge
	// answers NOT_FOUND for an id that is no live reservation.
	for _, v := range []string{"first", "second"} {
		if err := mc.Set(&memcache.Item{Key: q, Value: []byte(v)}); err != nil {
			t.Fatalf("Set: %v", err)
		}
	}

	t.Run("acked twice", func(t *testing.T) {
		it, err := mc.Get(q)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if err := mc.CompareAndSwap(it); err != nil {
			t.Fatalf("first CompareAndSwap: %v", err)
		}
		if err := mc.CompareAndSwap(it); err != memcache.ErrCacheMiss {
			t.Fatalf("second CompareAndSwap of the same id: %v, want exactly memcache.ErrCacheMiss", err)
		}
	})

	t.Run("holder disconnected", func(t *testing.T) {
		holder := memcache.New(g.addr)
		holder.Timeout = 5 * time.Second
		it, err := holder.Get(q)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if string(it.Value) != "second" {
			t.Fatalf("Get = %q, want second", it.Value)
		}
		if err := holder.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		// The disconnect requeues it; the old id is dead for good, even
		// once the message is handed out again under a new id.
		var again *memcache.Item
		testbroker.Eventually(t, 5*time.Second, "the message to be requeued", func() bool {
			again, err = mc.Get(q)
			return err == nil
		})
		if string(again.Value) != "second" || again.CasID == it.CasID {
			t.Fatalf("after requeue: value %q id %d (old id %d)", again.Value, again.CasID, it.CasID)
		}
		if err := mc.CompareAndSwap(it); err != memcache.ErrCacheMiss {
			t.Fatalf("CompareAndSwap with the dead id: %v, want exactly memcache.ErrCacheMiss", err)
		}
		if err := mc.CompareAndSwap(again); err != nil {
			t.Fatalf("CompareAndSwap with the live id: %v", err)
		}
	})

	t.Run("never reserved", func(t *testing.T) {
		err := mc.CompareAndSwap(&memcache.Item{Key: q, Value: []byte("x"), CasID: 12345})
		if err != memcache.ErrCacheMiss {
			t.Fatalf("CompareAndSwap with an unknown id: %v, want exactly memcache.ErrCacheMiss", err)
		}
	})
}

func TestGomemcacheDeleteWithoutReservation(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "del")
	mc := gmcWorkerClient(t, g.addr, 1)
	if err := mc.Delete(q); err != memcache.ErrCacheMiss {
		t.Fatalf("Delete of a never-used key: %v, want memcache.ErrCacheMiss", err)
	}
	if err := mc.Set(&memcache.Item{Key: q, Value: []byte("kept")}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	// Nothing reserved: delete must not touch the stored message.
	if err := mc.Delete(q); err != memcache.ErrCacheMiss {
		t.Fatalf("Delete with a message stored but not reserved: %v, want memcache.ErrCacheMiss", err)
	}
	if n := testbroker.QueueDepth(t, q); n != 1 {
		t.Fatalf("queue depth %d after a delete with no reservation, want 1", n)
	}
	// With one pooled connection, Delete runs on the connection that got
	// the message: that is the plain redqueue ack.
	it, err := mc.Get(q)
	if err != nil || string(it.Value) != "kept" {
		t.Fatalf("Get = %+v, %v", it, err)
	}
	if err := mc.Delete(q); err != nil {
		t.Fatalf("Delete on the holding connection: %v", err)
	}
	if n := testbroker.QueueDepth(t, q); n != 0 {
		t.Fatalf("queue depth %d after the delete, want 0", n)
	}
}

func TestGomemcacheCloseRequeues(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "close")
	mc := gmcWorkerClient(t, g.addr, 1)
	if err := mc.Set(&memcache.Item{Key: q, Value: []byte("abandoned"), Flags: 5}); err != nil {
		t.Fatalf("Set: %v", err)
	}

	worker := memcache.New(g.addr)
	worker.Timeout = 5 * time.Second
	it, err := worker.Get(q)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	// Held: another client sees nothing.
	if _, err := mc.Get(q); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("Get while another client holds the only message: %v, want ErrCacheMiss", err)
	}
	if err := worker.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var again *memcache.Item
	testbroker.Eventually(t, 5*time.Second, "the closed client's message to come back", func() bool {
		again, err = mc.Get(q)
		return err == nil
	})
	if string(again.Value) != "abandoned" || again.Flags != 5 || again.CasID == it.CasID {
		t.Fatalf("redelivered item: value %q flags %d id %d (first id %d)", again.Value, again.Flags, again.CasID, it.CasID)
	}
	if err := mc.CompareAndSwap(again); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

// TestGomemcacheWorkersShareClient is the recommended worker pattern: many
// goroutines share one client whose MaxIdleConns covers them all, each
// loops Get → (work) → CompareAndSwap. A pooled connection that holds a
// reservation answers a Get of that queue with a miss, so a miss only means
// "try again"; the ack by id works from any pooled connection.
func TestGomemcacheWorkersShareClient(t *testing.T) {
	const workers = 4
	const messages = 200
	g := startGateway(t, nil)
	q := testbroker.Name(t, "pool")
	mc := gmcWorkerClient(t, g.addr, workers)
	for i := range messages {
		if err := mc.Set(&memcache.Item{Key: q, Value: fmt.Appendf(nil, "m%04d", i), Flags: uint32(i)}); err != nil {
			t.Fatalf("Set %d: %v", i, err)
		}
	}

	var (
		mu     sync.Mutex
		seen   = map[string]int{}
		acked  atomic.Int64
		errs   = make(chan error, workers)
		wg     sync.WaitGroup
		finish = time.Now().Add(30 * time.Second)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for acked.Load() < messages {
				if time.Now().After(finish) {
					errs <- errors.New("timed out")
					return
				}
				it, err := mc.Get(q)
				if errors.Is(err, memcache.ErrCacheMiss) {
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("Get: %w", err)
					return
				}
				if want := fmt.Sprintf("m%04d", it.Flags); string(it.Value) != want {
					errs <- fmt.Errorf("value %q with flags %d", it.Value, it.Flags)
					return
				}
				mu.Lock()
				seen[string(it.Value)]++
				mu.Unlock()
				if err := mc.CompareAndSwap(it); err != nil {
					errs <- fmt.Errorf("CompareAndSwap %q: %w", it.Value, err)
					return
				}
				acked.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != messages {
		t.Fatalf("saw %d distinct messages, want %d", len(seen), messages)
	}
	for v, n := range seen {
		if n != 1 {
			t.Errorf("message %s seen %d times (no connection was closed: no duplicate may occur)", v, n)
		}
	}
	if n := testbroker.QueueDepth(t, q); n != 0 {
		t.Fatalf("queue depth %d at the end, want 0", n)
	}
}
