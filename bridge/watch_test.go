package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// A kestrel wait with more pipelined behind it than the read buffer holds
// cannot see its client go away: it ends at once, a miss, and the commands
// behind it are served. Before, the socket fuzz test found such a wait (up
// to a day long) kept its connection, and a message it would take, long
// after the client had gone.
func TestWaitWithAFullBufferBehindIt(t *testing.T) {
	g := startGateway(t, nil)
	q := testbroker.Name(t, "wait")
	const pipelined = 2 * readBufferSize / len("mn\r\n")

	c := g.dial()
	start := time.Now()
	c.Send("get " + q + "/t=20000\r\n" + strings.Repeat("mn\r\n", pipelined))
	c.Expect("END\r\n" + strings.Repeat("MN\r\n", pipelined))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the wait and the commands behind it took %v", took)
	}
	c.synced()

	// The same from a client that leaves at once: the gateway lets go.
	gone := g.dial()
	gone.Send("get " + q + "/t=20000\r\n" + strings.Repeat("mn\r\n", pipelined))
	gone.Close()
	testbroker.Eventually(t, 10*time.Second, "the gateway to let go of the waiting connection", func() bool {
		return g.srv.stats.currConns.Load() == 1
	})

	// A short pipeline behind a wait still waits for its message.
	c.Send("get " + q + "/t=20000\r\nmn\r\n")
	other := g.dial()
	other.Do("set "+q+" 0 0 2\r\nhi\r\n", "STORED\r\n")
	c.Expect("VALUE " + q + "/t=20000 0 2\r\nhi\r\nEND\r\nMN\r\n")
	c.Do("delete "+q+"\r\n", "DELETED\r\n")
}
