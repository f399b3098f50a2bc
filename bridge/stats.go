package bridge

import (
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mcbridge/mcbridge/mcproto"
)

// counters are memcached's general stats, per instance since start.
type counters struct {
	currConns     atomic.Int64
	totalConns    atomic.Uint64
	rejectedConns atomic.Uint64
	cmdGet        atomic.Uint64
	cmdSet        atomic.Uint64
	cmdTouch      atomic.Uint64
	getHits       atomic.Uint64
	getMisses     atomic.Uint64
	deleteHits    atomic.Uint64
	deleteMisses  atomic.Uint64
	touchHits     atomic.Uint64
	touchMisses   atomic.Uint64
	bytesRead     atomic.Uint64
	bytesWritten  atomic.Uint64
}

func (c *conn) stats(cmd *mcproto.Command) {
	var sub string
	if len(cmd.Args) > 0 {
		sub = string(cmd.Args[0])
	}
	switch {
	case len(cmd.Args) == 0:
		c.generalStats()
	case sub == "queue" && len(cmd.Args) == 1:
		c.queueStats()
	case sub == "settings" && len(cmd.Args) == 1:
		for _, st := range c.srv.cfg.Settings() {
			c.w.StatString(st.Name, st.Value)
		}
	case (sub == "items" || sub == "slabs" || sub == "sizes" || sub == "conns") && len(cmd.Args) == 1:
		// Tools ask for these on their own; a queue has no slabs.
	default:
		c.count(cmd, resultError)
		c.w.Error()
		return
	}
	c.count(cmd, resultOK)
	c.w.End()
}

func (c *conn) generalStats() {
	s := c.srv
	st := &s.stats
	now := time.Now()
	w := c.w
	w.StatInt("pid", int64(os.Getpid()))
	w.StatInt("uptime", int64(now.Sub(s.started).Seconds()))
	w.StatInt("time", now.Unix())
	w.StatString("version", Version)
	w.StatInt("curr_connections", st.currConns.Load())
	w.StatUint("total_connections", st.totalConns.Load())
	w.StatUint("rejected_connections", st.rejectedConns.Load())
	w.StatUint("cmd_get", st.cmdGet.Load())
	w.StatUint("cmd_set", st.cmdSet.Load())
	w.StatUint("cmd_touch", st.cmdTouch.Load())
	w.StatUint("get_hits", st.getHits.Load())
	w.StatUint("get_misses", st.getMisses.Load())
	w.StatUint("delete_hits", st.deleteHits.Load())
	w.StatUint("delete_misses", st.deleteMisses.Load())
	w.StatUint("touch_hits", st.touchHits.Load())
	w.StatUint("touch_misses", st.touchMisses.Load())
	w.StatUint("bytes_read", st.bytesRead.Load())
	w.StatUint("bytes_written", st.bytesWritten.Load())
	w.StatInt("threads", int64(runtime.GOMAXPROCS(0)))
	// kestrel/starling style per-queue lines.
	for _, qs := range s.queues.list() {
		prefix := "queue_" + qs.name
		if n, ok := qs.readyCount(s.ctx, s.broker); ok {
			w.StatInt(prefix+"_items", int64(n))
		} else {
			w.StatString(prefix+"_items", "unknown")
		}
		w.StatInt(prefix+"_open_transactions", qs.open.Load())
		w.StatUint(prefix+"_total_items", qs.published.Load())
	}
}

// queueStats is memcacheq's "stats queue": published/acked per queue.
func (c *conn) queueStats() {
	for _, qs := range c.srv.queues.list() {
		c.w.StatString(qs.name, strconv.FormatUint(qs.published.Load(), 10)+"/"+strconv.FormatUint(qs.acked.Load(), 10))
	}
}
