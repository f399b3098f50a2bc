package bridge

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/mcproto"
)

// A key that RabbitMQ would refuse as a queue name or routing key is
// refused before any broker call, in every framing: a short string that is
// not UTF-8 makes the broker close the whole connection (every other
// client's reservations on it would be dropped), and an "amq." name closes
// the channel. Latin-1 keys are valid memcache keys that a PHP application
// may send by accident: they just get CLIENT_ERROR. Nothing of them is
// remembered either: stats, which asks the broker about every known queue,
// keeps working.
func TestNamesTheBrokerWouldRefuse(t *testing.T) {
	fan := testbroker.Name(t, "fan")
	g := startGateway(t, yamlConfig(t, fmt.Sprintf("exchanges:\n  - {name: %s, type: fanout, keys: [%s]}\n", fan, fan)))
	q := testbroker.Name(t, "q")
	holder := g.dial()
	holder.Do("set "+q+" 0 0 4\r\nheld\r\n", "STORED\r\n")
	holder.Do("get "+q+"\r\n", "VALUE "+q+" 0 4\r\nheld\r\nEND\r\n")

	bad := []string{
		"caf\xe9",                   // Latin-1 é: not UTF-8
		"\xff\xfe",                  // never UTF-8
		"ok.\xc3",                   // a UTF-8 sequence cut short
		"amq.jobs",                  // reserved by RabbitMQ
		fan + "+caf\xe9",            // a kestrel fanout child
		strings.Repeat("\xe9", 250), // the longest memcache key
	}
	c := g.dial()
	for _, k := range bad {
		for _, cmd := range []string{
			"set " + k + " 0 0 1\r\nx\r\n",
			"get " + k + "\r\n",
			"get " + q + " " + k + "\r\n",
			"gets " + k + "/open\r\n",
			"gat 10 " + k + "/t=10\r\n",
			"delete " + k + "\r\n",
			"touch " + k + " 10\r\n",
			"cas " + k + " 0 0 1 7\r\nx\r\n",
			"mg " + k + " v\r\n",
			"mg " + k + " T10\r\n",
			"ms " + k + " 1\r\nx\r\n",
			"md " + k + "\r\n",
		} {
			c.Do(cmd, "CLIENT_ERROR "+mcproto.MsgBadFormat+"\r\n")
		}
	}
	b := g.dial()
	for i, k := range bad {
		op := uint32(i)
		b.Send(bGet(mcproto.BinGet, op, k))
		b.Expect(bErr(mcproto.BinGet, mcproto.BinStatusInvalidArgs, op, mcproto.BinMsgInvalidArgs))
		b.Send(bSet(mcproto.BinSet, op, k, 0, "x"))
		b.Expect(bErr(mcproto.BinSet, mcproto.BinStatusInvalidArgs, op, mcproto.BinMsgInvalidArgs))
		b.Send(bDelete(mcproto.BinDelete, op, 0, k))
		b.Expect(bErr(mcproto.BinDelete, mcproto.BinStatusInvalidArgs, op, mcproto.BinMsgInvalidArgs))
	}

	// Nobody else noticed: the reservation is still held on a live
	// channel, stats answers, and no broker connection was replaced.
	c.Send("stats\r\n")
	for l := c.Line(); l != "END"; l = c.Line() {
		if strings.Contains(l, "\xe9") || strings.Contains(l, "amq.") {
			t.Errorf("stats lists a refused name: %q", l)
		}
	}
	holder.Do("delete "+q+"\r\n", "DELETED\r\n")
	for _, role := range []string{metrics.RolePublish, metrics.RoleConsume} {
		if v := toFloat64(g.srv.metrics.AMQPReconnects.WithLabelValues(role)); v != 0 {
			t.Errorf("amqp_reconnects_total{role=%q} = %v, want 0", role, v)
		}
	}
	if got := testbroker.QueueDepth(t, q); got != 0 {
		t.Errorf("queue holds %d messages after the delete, want 0", got)
	}
}
