package bridge

import (
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
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

// family is the counters of a tally: its commands, hits and misses (nil:
// not counted). A cas counts as a delete: both ack.
func (c *counters) family(t tally) (cmds, hits, misses *atomic.Uint64) {
	switch t {
	case tallyGet:
		return &c.cmdGet, &c.getHits, &c.getMisses
	case tallySet:
		return &c.cmdSet, nil, nil
	case tallyTouch:
		return &c.cmdTouch, &c.touchHits, &c.touchMisses
	case tallyDelete:
		return nil, &c.deleteHits, &c.deleteMisses
	}
	return nil, nil, nil
}

// stat is one line of a stats listing: memcached's "STAT <name> <value>".
// Each framing spells the listing its way.
type stat struct{ name, value string }

// statsListing is the listing a stats command asks for: args is its group,
// if any. known is false for a group that does not exist. The queues listed
// are those of t, the identity the connection acts as: a user sees the
// queues used under its own name.
func (s *Server) statsListing(args [][]byte, t *tenant) (list []stat, known bool) {
	var group string
	if len(args) > 0 {
		group = string(args[0])
	}
	switch {
	case len(args) == 0:
		return s.generalStats(t), true
	case len(args) > 1:
		return nil, false
	case group == "queue":
		return s.queueStats(t), true
	case group == "settings":
		for _, st := range s.cfg.Settings() {
			list = append(list, stat{st.Name, st.Value})
		}
		return list, true
	case group == "items" || group == "slabs" || group == "sizes" || group == "conns":
		// Tools ask for these on their own; a queue has no slabs.
		return nil, true
	}
	return nil, false
}

// generalStats are memcached's general lines, then kestrel/starling style
// lines per queue.
func (s *Server) generalStats(t *tenant) []stat {
	st := &s.stats
	now := time.Now()
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	list := []stat{
		{"pid", i(int64(os.Getpid()))},
		{"uptime", i(int64(now.Sub(s.started).Seconds()))},
		{"time", i(now.Unix())},
		{"version", Version},
		{"curr_connections", i(st.currConns.Load())},
		{"total_connections", u(st.totalConns.Load())},
		{"rejected_connections", u(st.rejectedConns.Load())},
		{"cmd_get", u(st.cmdGet.Load())},
		{"cmd_set", u(st.cmdSet.Load())},
		{"cmd_touch", u(st.cmdTouch.Load())},
		{"get_hits", u(st.getHits.Load())},
		{"get_misses", u(st.getMisses.Load())},
		{"delete_hits", u(st.deleteHits.Load())},
		{"delete_misses", u(st.deleteMisses.Load())},
		{"touch_hits", u(st.touchHits.Load())},
		{"touch_misses", u(st.touchMisses.Load())},
		{"bytes_read", u(st.bytesRead.Load())},
		{"bytes_written", u(st.bytesWritten.Load())},
		{"threads", i(int64(runtime.GOMAXPROCS(0)))},
	}
	qlist := t.queues.List()
	// Bounded in time and broker calls, however many queues: counts not
	// read now show their last value.
	t.queues.RefreshCounts(s.ctx, qlist)
	for _, qs := range qlist {
		prefix := "queue_" + qs.Name
		items := "unknown"
		if n, ok := qs.ReadyCount(); ok {
			items = i(int64(n))
		}
		list = append(list,
			stat{prefix + "_items", items},
			stat{prefix + "_open_transactions", i(qs.Open.Load())},
			stat{prefix + "_total_items", u(qs.Published.Load())})
	}
	return list
}

// queueStats is memcacheq's "stats queue": published/acked per queue.
func (s *Server) queueStats(t *tenant) []stat {
	var list []stat
	for _, qs := range t.queues.List() {
		list = append(list, stat{qs.Name, strconv.FormatUint(qs.Published.Load(), 10) + "/" + strconv.FormatUint(qs.Acked.Load(), 10)})
	}
	return list
}
