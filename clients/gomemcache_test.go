package clients

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// gomemcache's defaults, as the README documents them.
func TestGomemcacheDefaults(t *testing.T) {
	t.Parallel()
	if memcache.DefaultTimeout != 500*time.Millisecond || memcache.DefaultMaxIdleConns != 2 {
		t.Fatalf("gomemcache defaults changed: Timeout %v, MaxIdleConns %d (README says 500ms, 2)",
			memcache.DefaultTimeout, memcache.DefaultMaxIdleConns)
	}
	g := testgateway.Start(t, nil, testgateway.Options{})
	q := testbroker.Name(t, "defaults")
	mc := memcache.New(g.Addr) // the defaults: 500ms timeout, 2 idle connections
	t.Cleanup(func() { _ = mc.Close() })

	t.Run("delete_and_ack_miss", func(t *testing.T) {
		if err := mc.Delete(q); !errors.Is(err, memcache.ErrCacheMiss) {
			t.Errorf("Delete without a reservation: %v, want ErrCacheMiss", err)
		}
		if err := mc.CompareAndSwap(&memcache.Item{Key: q, Value: []byte{}}); !errors.Is(err, memcache.ErrCacheMiss) {
			t.Errorf("CompareAndSwap with an unknown id: %v, want ErrCacheMiss", err)
		}
		if _, err := mc.Get(q); !errors.Is(err, memcache.ErrCacheMiss) {
			t.Errorf("Get on an empty queue: %v, want ErrCacheMiss", err)
		}
	})

	t.Run("wait_under_the_timeout", func(t *testing.T) {
		start := time.Now()
		if _, err := mc.Get(q + "/t=300"); !errors.Is(err, memcache.ErrCacheMiss) {
			t.Fatalf("Get %s/t=300: %v, want ErrCacheMiss", q, err)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Errorf("the /t=300 wait took only %v", took)
		}
	})

	t.Run("wait_over_the_timeout", func(t *testing.T) {
		// The client gives up after 500ms and drops the connection: a
		// network timeout error, not a miss. The next call dials again.
		_, err := mc.Get(q + "/t=1500")
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Get %s/t=1500 with the 500ms default timeout: %v, want a timeout", q, err)
		}
		if err := mc.Set(&memcache.Item{Key: q, Value: []byte("next")}); err != nil {
			t.Fatalf("next command: %v", err)
		}
		it, err := mc.Get(q)
		if err != nil || string(it.Value) != "next" {
			t.Fatalf("Get after the timeout: %v %v", it, err)
		}
		if err := mc.CompareAndSwap(it); err != nil {
			t.Fatalf("ack: %v", err)
		}
	})
}

// TestGomemcachePool: with MaxIdleConns = workers (as the example sets it)
// the pool never closes a connection that holds a reservation, so nothing is
// requeued or redelivered, and CompareAndSwap acks every job by id from
// whichever pooled connection it gets.
func TestGomemcachePool(t *testing.T) {
	t.Parallel()
	const n, workers = 60, 6
	g := testgateway.Start(t, nil, testgateway.Options{})
	q := testbroker.Name(t, "pool")
	stored(t, mustRun(t, 60*time.Second, nil, goBin+"/producer", g.Addr, q, "60").stdout, n)
	r := mustRun(t, 60*time.Second, nil, goBin+"/worker", "-workers", "6", g.Addr, q, "60", "3")
	got, _ := jobs(t, r.stdout)
	exactlyOnce(t, got, n, 1, 0)
	for _, m := range []string{"mcbridge_requeued_total", "mcbridge_redelivered_total"} {
		if v := g.Metric(m); v != 0 {
			t.Errorf("%s = %v, want 0 with MaxIdleConns = %d workers\nworker stderr:\n%s", m, v, workers, clip(r.stderr))
		}
	}
	drained(t, q)
}
