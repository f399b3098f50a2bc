package authtest

import (
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
	"github.com/mcbridge/mcbridge/mcproto"
)

// Most tests run in parallel: each has its own gateway, users and queues,
// and they mostly wait for rabbitmqctl. The two that measure time do not.
func TestMain(m *testing.M) { testbroker.Main(m) }

// gateway is an in-process mcbridge for one test.
type gateway struct {
	*testgateway.Gateway
	t testing.TB
}

func start(t *testing.T, cfg *config.Config) *gateway {
	t.Helper()
	return &gateway{testgateway.Start(t, cfg, testgateway.Options{}), t}
}

// client is a raw memcache connection that checks exact bytes.
type client struct{ *mctest.Client }

func (g *gateway) dial() *client {
	return &client{mctest.Dial(g.t, g.Addr)}
}

// synced proves the connection still parses commands in step.
func (c *client) synced() {
	c.T.Helper()
	c.Do("version\r\n", "VERSION "+bridge.Version+"\r\n")
}

// bsynced is synced for a binary connection.
func (c *client) bsynced() {
	c.T.Helper()
	c.Do(breq(mcproto.BinVersion, 0xfeed, 0, "", "", ""), bresp(mcproto.BinVersion, 0, 0xfeed, 0, "", "", bridge.Version))
}

// Frames built byte by byte by mctest, independently of mcproto's writer.
var (
	breq    = mctest.BinRequest[mcproto.BinOpcode]
	bresp   = mctest.BinResponse[mcproto.BinOpcode, mcproto.BinStatus]
	be32    = mctest.BE32
	bGet    = mctest.BinGet[mcproto.BinOpcode]
	bSet    = mctest.BinSet[mcproto.BinOpcode]
	bDelete = mctest.BinDelete[mcproto.BinOpcode]
	bOK     = mctest.BinOK[mcproto.BinOpcode]
	bErr    = mctest.BinErr[mcproto.BinOpcode, mcproto.BinStatus]
)

// bhit reads a successful get response with that flags and value, and
// returns its cas (the reservation id).
func (c *client) bhit(op mcproto.BinOpcode, opaque uint32, flags uint32, key, value string) uint64 {
	c.T.Helper()
	_ = c.NetConn.SetReadDeadline(time.Now().Add(mctest.IOTimeout))
	h := make([]byte, 24)
	if _, err := io.ReadFull(c.Reader, h); err != nil {
		c.T.Fatalf("reading binary header: %v", err)
	}
	cas := binary.BigEndian.Uint64(h[16:])
	body := make([]byte, binary.BigEndian.Uint32(h[8:]))
	if _, err := io.ReadFull(c.Reader, body); err != nil {
		c.T.Fatalf("reading binary body: %v", err)
	}
	want := bresp(op, mcproto.BinStatusOK, opaque, cas, be32(flags), key, value)
	if got := string(h) + string(body); got != want || cas == 0 {
		c.T.Fatalf("item response mismatch:\n want %q\n  got %q", want, got)
	}
	return cas
}
