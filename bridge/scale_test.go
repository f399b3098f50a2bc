package bridge

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// pipelined sends cmds on one connection at once and reads one reply line
// per command (plus, for a hit, its data and END), returning the first
// lines.
func pipelined(t *testing.T, addr string, cmds []string, valueReplies bool) []string {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer nc.Close()
	// Creating a queue costs the broker milliseconds: thousands take minutes.
	_ = nc.SetDeadline(time.Now().Add(60*time.Second + time.Duration(len(cmds))*100*time.Millisecond))
	go func() { _, _ = nc.Write([]byte(strings.Join(cmds, ""))) }()
	r := bufio.NewReader(nc)
	out := make([]string, 0, len(cmds))
	for range cmds {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Errorf("reply %d: %v", len(out), err)
			return out
		}
		out = append(out, strings.TrimSuffix(l, "\r\n"))
		if valueReplies && strings.HasPrefix(l, "VALUE ") {
			for range 2 { // data, END
				if _, err := r.ReadString('\n'); err != nil {
					t.Errorf("reply %d: %v", len(out), err)
					return out
				}
			}
		}
	}
	return out
}

// Thousands of live queues: one message set into each of 3,000 queues
// (MCBRIDGE_SCALE_QUEUES=20000 for issue 16's figure) is got and deleted
// from each. With a channel per queue the consume connection ran out of
// channels (RabbitMQ's channel_max, 2,047) and every get past that
// answered SERVER_ERROR; the queues now share a bounded pool of channels.
// The state the gateway keeps of them, idle, costs at most 2 KiB a queue.
func TestThousandsOfQueues(t *testing.T) {
	queues := scaleQueues(t, 3000)
	// The broker creates queues faster when asked by many at once.
	const conns = 16
	// Every queue keeps its state to the end, to be measured.
	shortIdle(t, time.Hour)
	cfg := testConfig()
	cfg.Limits.MaxQueues = max(queues, cfg.Limits.MaxQueues)
	if queues > 3000 {
		// At 20,000 queues the broker confirmed the last sets of the
		// pipelines after more than the default 5 s (they were stored:
		// their gets hit), as a deployment this size would configure.
		cfg.AMQP.ConfirmTimeout = 30 * time.Second
	}
	g := startGateway(t, cfg)
	heapBefore := heapInUse()
	prefix := testbroker.Name(t, "many")
	names := make([]string, queues)
	for i := range names {
		names[i] = fmt.Sprintf("%s.%04d", prefix, i)
	}
	t.Cleanup(func() { deleteQueues(t, names) })
	if queues > 3000 {
		// The broker creates a few hundred queues a second at best (on
		// this 2-core machine, under load, 80 through sets): tens of
		// thousands are declared beforehand, faster, as an application's
		// deployment would. The gateway still declares (finds) each.
		start := time.Now()
		declareQueues(t, names)
		t.Logf("%d queues declared beforehand in %v", queues, time.Since(start).Round(time.Millisecond))
	}
	run := func(what string, cmd func(q string) []string, want func(q string, reply string) bool) {
		var wg sync.WaitGroup
		for c := range conns {
			wg.Go(func() {
				var cmds []string
				var qs []string
				for i := c; i < queues; i += conns {
					for _, one := range cmd(names[i]) {
						cmds = append(cmds, one)
						qs = append(qs, names[i])
					}
				}
				for i, r := range pipelined(t, g.addr, cmds, true) {
					if !want(qs[i], r) {
						t.Errorf("%s %s: %q", what, qs[i], r)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	start := time.Now()
	run("set", func(q string) []string { return []string{"set " + q + " 0 0 5\r\nhello\r\n"} },
		func(_, r string) bool { return r == "STORED" })
	t.Logf("%d sets in %v", queues, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	run("get+delete", func(q string) []string { return []string{"get " + q + "\r\n", "delete " + q + "\r\n"} },
		func(q, r string) bool { return r == "VALUE "+q+" 0 5" || r == "DELETED" })
	t.Logf("%d gets and deletes in %v", queues, time.Since(start).Round(time.Millisecond))
	if n := g.srv.queues.Len(); n != queues {
		t.Errorf("the gateway keeps %d queues, want %d", n, queues)
	}
	per := (int64(heapInUse()) - int64(heapBefore)) / int64(queues)
	t.Logf("idle queue state: %d bytes a queue", per)
	if per > 2048 {
		t.Errorf("an idle queue costs %d bytes, want at most 2048", per)
	}
	for _, cc := range g.broker.ConsumeChannels() {
		if cc > 600 {
			t.Errorf("a consume connection has %d channels", cc)
		}
	}
	for _, q := range []string{names[0], names[queues/2], names[queues-1]} {
		if d := testbroker.QueueDepth(t, q); d != 0 {
			t.Errorf("queue %s holds %d messages after its get and delete", q, d)
		}
	}
}

// One get line naming thousands of existing queues costs the other
// clients nothing: the channels are bounded, so nobody else's get fails
// for want of one.
func TestGetOfThousandsOfQueuesHurtsNobody(t *testing.T) {
	g := startGateway(t, nil)
	const queues = 2200
	// Short names: the get line has 2,200 of them within 64 KiB.
	prefix := "w" + randomHex(4)
	names := make([]string, queues)
	var sets []string
	for i := range names {
		names[i] = fmt.Sprintf("%s.%04d", prefix, i)
		sets = append(sets, "set "+names[i]+" 0 0 1\r\nx\r\n")
	}
	t.Cleanup(func() { deleteQueues(t, names) })
	for _, r := range pipelined(t, g.addr, sets, false) {
		if r != "STORED" {
			t.Fatalf("set: %q", r)
		}
	}
	mine := testbroker.Name(t, "mine")
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		c, err := mctest.DialConn(g.addr)
		if err != nil {
			errs <- err
			return
		}
		defer c.Close()
		for i := 0; ; i++ {
			select {
			case <-done:
				errs <- nil
				return
			default:
			}
			if r, err := c.Set(mine, "v"); err != nil || r != "STORED" {
				errs <- fmt.Errorf("set %d while a wide get runs: %q %v", i, r, err)
				return
			}
			if hit, _, err := c.Get(mine); err != nil || !hit {
				errs <- fmt.Errorf("get %d while a wide get runs: %v %v", i, hit, err)
				return
			}
			if r, err := c.Delete(mine); err != nil || r != "DELETED" {
				errs <- fmt.Errorf("delete %d while a wide get runs: %q %v", i, r, err)
				return
			}
		}
	}()
	wide := g.dial()
	wide.Send("get " + strings.Join(names, " ") + "\r\n")
	hits := 0
	for {
		l := wide.Line()
		if l == "END" {
			break
		}
		wide.Line()
		hits++
	}
	close(done)
	if err := <-errs; err != nil {
		t.Error(err)
	}
	if want := g.cfg.Limits.MaxReservationsPerConnection; hits != want {
		t.Errorf("the wide get reserved %d messages, want the per-connection cap %d", hits, want)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// deleteQueues deletes the queues on one channel (no-wait): a connection
// each would take minutes for thousands.
func deleteQueues(t testing.TB, names []string) {
	ch := testbroker.Channel(t)
	for _, q := range names {
		if _, err := ch.QueueDelete(q, false, false, true); err != nil {
			t.Errorf("delete %s: %v", q, err)
			return
		}
	}
}
