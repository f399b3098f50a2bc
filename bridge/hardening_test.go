package bridge

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/mcproto"
)

// TestCommandLabelsOwnName: a command the gateway refuses still counts
// under the command the client sent (an oversized or malformed set is
// "set", a binary NOOP is "noop"); only a line that names no command is
// "invalid". Refusals by max_item_size and max_connections are counted in
// mcbridge_limit_refusals_total.
func TestCommandLabelsOwnName(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxItemSize = 1024
	cfg.Limits.MaxConnections = 3
	g := startGateway(t, cfg)
	m := g.srv.metrics
	cmds := func(command, result string) float64 {
		return toFloat64(m.Commands.WithLabelValues(command, result))
	}
	refused := func(limit string) float64 { return toFloat64(m.LimitRefusals.WithLabelValues(limit)) }
	q := testbroker.Name(t, "q")
	big := strings.Repeat("v", 2000)

	c := g.dial()
	c.Do(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", q, len(big), big), "SERVER_ERROR object too large for cache\r\n")
	c.Do(fmt.Sprintf("set %s 0 0 %d noreply\r\n%s\r\n", q, len(big), big), "")
	c.Do("set "+q+" 0 0 x\r\n", "CLIENT_ERROR bad command line format\r\n")
	c.Do(fmt.Sprintf("ms %s %d\r\n%s\r\n", q, len(big), big), "SERVER_ERROR object too large for cache\r\n")
	c.Do("bogus\r\n", "ERROR\r\n")
	c.synced()

	b := g.dial()
	b.Do(breq(mcproto.BinNoop, 1, 0, "", "", ""), bOK(mcproto.BinNoop, 1))
	b.Do(bSet(mcproto.BinSet, 2, q, 0, big), bErr(mcproto.BinSet, mcproto.BinStatusTooLarge, 2, "Too large."))

	for _, tc := range []struct {
		command, result string
		want            float64
	}{
		{"set", "server_error", 3}, // two text, one binary
		{"set", "client_error", 1},
		{"ms", "server_error", 1},
		{"noop", "ok", 1},
		{"mn", "ok", 0},
		{"invalid", "server_error", 0},
		{"invalid", "client_error", 0},
		{"invalid", "error", 1},
	} {
		if got := cmds(tc.command, tc.result); got != tc.want {
			t.Errorf("mcbridge_commands_total{command=%q,result=%q} = %v, want %v", tc.command, tc.result, got, tc.want)
		}
	}
	if got := refused(metrics.LimitMaxItemSize); got != 4 {
		t.Errorf("limit_refusals_total{limit=max_item_size} = %v, want 4", got)
	}

	// c and b hold two of three slots; the third is taken, the fourth refused.
	d := g.dial()
	d.synced()
	e := g.dial()
	e.Expect("ERROR Too many open connections\r\n")
	e.ExpectClosed()
	if got := refused(metrics.LimitMaxConnections); got != 1 {
		t.Errorf("limit_refusals_total{limit=max_connections} = %v, want 1", got)
	}
	for _, l := range []string{metrics.LimitMaxQueues, metrics.LimitMaxUsers} {
		if got := refused(l); got != 0 {
			t.Errorf("limit_refusals_total{limit=%q} = %v, want 0", l, got)
		}
	}
}

// TestMemcachedCloses: where memcached answers and closes, so does the
// gateway, at once rather than after the read timeout: a binary SET that
// declares a 4 GiB body (memcached refuses any body over 1 GiB), and quit
// followed by anything.
func TestMemcachedCloses(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.ReadTimeout = time.Minute
	g := startGateway(t, cfg)
	q := testbroker.Name(t, "q")

	b := g.dial()
	huge := []byte(bSet(mcproto.BinSet, 7, q, 0, "v"))
	binary.BigEndian.PutUint32(huge[8:], 0xffffffff)
	start := time.Now()
	b.Send(string(huge))
	b.Expect(bErr(mcproto.BinSet, mcproto.BinStatusInvalidArgs, 7, "Invalid arguments"))
	b.ExpectClosed()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("4 GiB binary set closed after %v, want at once", d)
	}

	c := g.dial()
	c.Do("quit now\r\n", "")
	c.ExpectClosed()
	c = g.dial()
	c.Do("quit\r\n", "")
	c.ExpectClosed()

	// Nothing reached the queue.
	d := g.dial()
	d.Do("get "+q+"\r\n", "END\r\n")
}

// TestMetaSetReturnsCas: every ms reply carries the c flag when asked,
// as memcached's does: c0, since no reservation results from an ms (a
// publish makes an unheld message, ms C<id> ends the reservation it names).
func TestMetaSetReturnsCas(t *testing.T) {
	g := startGateway(t, yamlConfig(t, "auto_declare: {enabled: true, keys: [\"mcbt.#\"]}\n"))
	q := testbroker.Name(t, "q")
	c := g.dial()
	c.Do("ms "+q+" 2 c s\r\nm1\r\n", "HD c0 s2\r\n")
	id := mgCas(c, "mg "+q+" v c\r\n", "VA 2 c", "", "m1\r\n")
	c.Do(fmt.Sprintf("ms %s 0 C%d c k\r\n\r\n", q, id), "HD c0 k"+q+"\r\n")
	c.Do(fmt.Sprintf("ms %s 0 C%d c O1\r\n\r\n", q, id), "NF c0 O1\r\n")
	// Not routable (auto_declare does not cover it): NS, with c0 too.
	c.Do("ms unrouted 1 c s\r\nx\r\n", "NS c0 s1\r\n")
	c.Do("mg "+q+" v\r\n", "EN\r\n")
}
