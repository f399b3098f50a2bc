package bridge

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/bridge/internal/queues"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/mcproto"
)

// A worker that polls slowly: its connection is quiet for longer than
// read_timeout, then a get returns a value larger than the 4 KiB write
// buffer, so the reply is written in the middle of the command, before any
// flush. Every write must get a fresh deadline, or the client loses its
// connection instead of getting the value (and the message is requeued,
// which a quorum delivery limit counts).
func TestLargeReplyAfterQuietPeriod(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.ReadTimeout = 500 * time.Millisecond
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "q")
	value := strings.Repeat("v", 5000)

	text := g.dial()
	text.Do("set "+q+" 0 0 5000\r\n"+value+"\r\n", "STORED\r\n")
	text.Do("set "+q+" 0 0 5000\r\n"+value+"\r\n", "STORED\r\n")
	bin := g.dial()
	bin.bsynced()

	time.Sleep(3 * cfg.Limits.ReadTimeout) // the quiet period under test
	text.Do("get "+q+"\r\n", "VALUE "+q+" 0 5000\r\n"+value+"\r\nEND\r\n")
	text.Do("delete "+q+"\r\n", "DELETED\r\n")
	bin.Send(bGet(mcproto.BinGet, 1, q))
	bin.bhit(mcproto.BinGet, 1, 0, "", value)
	bin.Send(bDelete(mcproto.BinDelete, 2, 0, q))
	bin.Expect(bOK(mcproto.BinDelete, 2))
}

// A client that pipelines gets and never reads its replies: the replies
// fill the socket buffers, the writes stop, and the write deadline ends the
// connection, which gives its reservations back at once (not when their
// leases end, five minutes later by default).
func TestClientThatNeverReadsLosesItsReservations(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.ReadTimeout = 500 * time.Millisecond
	g := startGateway(t, cfg)
	const nQueues, size = 32, 256 << 10
	value := strings.Repeat("x", size)
	names := make([]string, nQueues)
	setter := g.dial()
	for i := range names {
		names[i] = testbroker.Name(t, "q"+strconv.Itoa(i))
		setter.Do("set "+names[i]+" 0 0 "+strconv.Itoa(size)+"\r\n"+value+"\r\n", "STORED\r\n")
	}

	nc, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := nc.Write([]byte("get " + strings.Join(names, " ") + "\r\n")); err != nil {
		t.Fatal(err)
	}
	held := func() (n float64) { return toFloat64(g.srv.metrics.ReservationsOpen.WithLabelValues(queues.AutoLabel)) }
	testbroker.Eventually(t, 10*time.Second, "the gets to reserve", func() bool { return held() > 0 })
	start := time.Now()
	testbroker.Eventually(t, 10*time.Second, "the reservations to be given back", func() bool { return held() == 0 })
	t.Logf("reservations given back %v after they were taken (write deadline %v)", time.Since(start).Round(time.Millisecond), cfg.Limits.ReadTimeout)
	for _, q := range names {
		if d := testbroker.QueueDepth(t, q); d != 1 {
			t.Errorf("queue %s holds %d messages, want 1 (given back)", q, d)
		}
	}
}
