package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// A get line naming one empty queue a thousand times (a 38 KiB line) asks
// the broker once, not a thousand times: the socket fuzz test found such a
// line kept its connection busy for tens of seconds (two broker round
// trips per key of a consumed queue), long after its client had gone, and
// held a graceful shutdown for as long.
func TestMultiGetLooksAtEachQueueOnce(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "multi")
	other := testbroker.Name(t, "other")
	c := g.dial()
	// Gets in a row make the queue's consumer run: the slow case.
	for range 5 {
		c.Do("get "+q+"\r\n", "END\r\n")
	}
	const n = 1000
	start := time.Now()
	c.Do("get"+strings.Repeat(" "+q, n)+"\r\n", "END\r\n")
	took := time.Since(start)
	t.Logf("a get of %d keys of one empty queue: %v", n, took)
	if took > 3*time.Second {
		t.Errorf("a get of %d keys of one empty queue took %v", n, took)
	}

	// Only plain keys share the look: a hit is still one per queue and
	// connection, another queue of the line is asked, and a key with
	// options does what its options say.
	c.Do("set "+other+" 0 0 1\r\na\r\n", "STORED\r\n")
	c.Do("set "+other+" 0 0 1\r\nb\r\n", "STORED\r\n")
	c.Do("get "+q+" "+other+" "+q+" "+other+"/open "+other+"\r\n", "VALUE "+other+" 0 1\r\na\r\nEND\r\n")
	c.Do("get "+other+" "+other+"/close/open\r\n", "VALUE "+other+"/close/open 0 1\r\nb\r\nEND\r\n")
	c.Do("get "+other+"/close "+other+"\r\n", "END\r\n")
	c.Do("set "+other+" 0 0 1\r\nc\r\n", "STORED\r\n")
	// The first wait has time for a message still on its way to the
	// queue's consumer (a 1 ms wait may rightly miss it on a busy
	// machine); the second misses at once, c being held.
	c.Do("get "+other+"/t=500 "+other+"/t=1000\r\n", "VALUE "+other+"/t=500 0 1\r\nc\r\nEND\r\n")
	c.Do("delete "+other+"\r\n", "DELETED\r\n")
}
