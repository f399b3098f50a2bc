package bridge

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// TestPendingBytesBackpressure: hundreds of clients send a large value at
// once (500 × 1 MiB against a limits.max_pending_bytes of 32 MiB; under the
// race detector 200 × 512 KiB against 16 MiB). The gateway
// stops reading values while the limit is spent, so what is pending never
// passes the limit plus one value, the heap stays within a bound of the
// limit (not of the clients' total), every client gets STORED (back-
// pressure, never an error), and each stored message is in the queue
// exactly once.
func TestPendingBytesBackpressure(t *testing.T) {
	clients, size, limit := 500, 1<<20, 32<<20
	if raceEnabled {
		clients, size, limit = 200, 512<<10, 16<<20
	}
	const idLen = 16
	cfg := testConfig()
	cfg.Limits.MaxItemSize = config.Size(size)
	cfg.Limits.MaxPendingBytes = config.Size(limit)
	cfg.Limits.MaxConnections = clients + 10
	cfg.Limits.ReadTimeout = time.Minute
	// The test broker shares a small machine with the rest of the suite;
	// a slow confirm is not what this test is about.
	cfg.AMQP.ConfirmTimeout = time.Minute
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "q")
	// The queue exists before the flood (its declaration is not measured).
	first := g.dial()
	first.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")
	first.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nx\r\nEND\r\n")
	first.Do("delete "+q+"\r\n", "DELETED\r\n")
	filler := bytes.Repeat([]byte("v"), size-idLen)
	header := []byte(fmt.Sprintf("set %s 0 0 %d\r\n", q, size))

	conns := make([]net.Conn, clients)
	for i := range conns {
		nc, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { nc.Close() })
		conns[i] = nc
	}

	// The heap, sampled while the values flow; the clients' own share is
	// small (one shared filler, a 64-byte reader each).
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc
	var peakHeap, peakInuse uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peakHeap = max(peakHeap, m.HeapAlloc)
			peakInuse = max(peakInuse, m.HeapInuse)
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	replies := make([]string, clients)
	var wg sync.WaitGroup
	for i, nc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = nc.SetDeadline(time.Now().Add(4 * time.Minute))
			id := fmt.Appendf(nil, "%0*d", idLen, i)
			bufs := net.Buffers{header, id, filler, []byte("\r\n")}
			if _, err := bufs.WriteTo(nc); err != nil {
				replies[i] = "write: " + err.Error()
				return
			}
			line, err := bufio.NewReaderSize(nc, 64).ReadString('\n')
			if err != nil {
				replies[i] = "read: " + err.Error()
				return
			}
			replies[i] = strings.TrimSuffix(line, "\r\n")
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopSampling)
	<-sampled

	for i, r := range replies {
		if r != "STORED" {
			t.Errorf("client %d: %q, want STORED", i, r)
		}
	}
	used, peak := g.srv.pending.stats()
	t.Logf("figure: %d clients × %d KiB with max_pending_bytes %d MiB (race detector: %v): all STORED in %v; pending peaked at %.1f MiB; heap peaked %.1f MiB above the %.1f MiB before (HeapInuse peak %.1f MiB)",
		clients, size>>10, limit>>20, raceEnabled, elapsed.Round(time.Millisecond), float64(peak)/(1<<20),
		float64(peakHeap-min(baseHeap, peakHeap))/(1<<20), float64(baseHeap)/(1<<20), float64(peakInuse)/(1<<20))
	if used != 0 {
		t.Errorf("%d bytes still pending after every reply", used)
	}
	if peak > int64(limit+size) {
		t.Errorf("pending peaked at %d bytes, over the limit %d plus one value", peak, limit)
	}
	if peak < int64(limit-size) {
		t.Errorf("pending peaked at %d bytes: the limit %d was never reached, so nothing was shown", peak, limit)
	}
	// What the gateway holds is bounded by the limit, not by what the
	// clients send (12 to 15 times the limit): a pending value is in memory
	// once (its read buffer goes to the broker as it is), the amqp
	// library's frames and the garbage collector's slack (the heap grows to
	// twice what is live before it runs) at most double that again; 16 MiB
	// covers the connections' own buffers and goroutines.
	if bound := uint64(4*(limit+size) + 16<<20); peakHeap > baseHeap+bound {
		t.Errorf("heap peaked at %d MiB above its start, over the bound %d MiB", (peakHeap-baseHeap)>>20, bound>>20)
	}
	if v := toFloat64(g.srv.metrics.PendingBytes); v != 0 {
		t.Errorf("mcbridge_pending_bytes = %v after every reply, want 0", v)
	}

	// Every message is in the queue exactly once.
	if n := testbroker.QueueDepth(t, q); n != clients {
		t.Errorf("queue holds %d messages, want %d", n, clients)
	}
	// Read straight from the broker, as a back-office consumer would.
	ch := testbroker.Channel(t)
	seen := make(map[int]int)
	for range clients + 1 {
		d, ok, err := ch.Get(q, false)
		if err != nil {
			t.Fatalf("basic.get: %v", err)
		}
		if !ok {
			break
		}
		body := d.Body
		id, err := strconv.Atoi(string(body[:min(idLen, len(body))]))
		if err != nil || len(body) != size || !bytes.Equal(body[idLen:], filler) {
			t.Fatalf("message %q… (%d bytes) is not one the clients sent", body[:min(idLen, len(body))], len(body))
		}
		seen[id]++
		if err := d.Ack(false); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	for i := range clients {
		if seen[i] != 1 {
			t.Errorf("client %d's message seen %d times, want once", i, seen[i])
		}
	}
	if len(seen) != clients {
		t.Errorf("%d distinct messages, want %d", len(seen), clients)
	}
}
