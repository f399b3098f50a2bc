package bridge

import (
	"strings"

	"github.com/mcbridge/mcbridge/mcproto"
)

// Meta commands (mg, ms, md, mn) on the session's operations:
//
//	mg <key> v …    reserve, as get (T<secs> sets the lease, as gat)
//	mg <key> T<s>   without v: set the lease of this connection's reservation, as touch
//	mg <key>        without v or T: HD when this connection holds a reservation on it, else EN
//	ms <key> <n> …  publish, as set; with C<id>: ack that reservation id, as cas
//	md <key> …      ack this connection's reservation; with C<id>: ack that id from any connection
//	mn              MN
//
// Return flags are written in the order the client sent them; flags that
// mean nothing on a queue (h, l, u, E, N, R, I, …) are accepted and
// ignored.

// Which return flags each reply carries.
const (
	metaItemFlags  = "cfstkO" // VA, and HD of an mg about a held message
	metaStoreFlags = "cksO"   // every ms reply (c is 0: see metaReply)
	metaPlainFlags = "kO"     // EN, NF, NS, and HD of md
)

// metaFlags writes the return flags that the client asked for and that
// reply allows, in the client's order. it is the message the reply tells
// of (nil: none, and c is 0).
func (c *conn) metaFlags(m *mcproto.MetaFlags, allowed string, it *item) {
	if it == nil {
		it = &item{}
	}
	for _, t := range m.Tokens {
		f := t[0]
		if strings.IndexByte(allowed, f) < 0 {
			continue
		}
		switch f {
		case 'c':
			c.w.MetaFlagUint('c', it.cas)
		case 'f':
			c.w.MetaFlagUint('f', uint64(it.flags))
		case 's':
			c.w.MetaFlagUint('s', uint64(len(it.body)))
		case 't':
			// A queue message has no cache TTL to report.
			c.w.MetaFlagInt('t', -1)
		case 'k':
			c.w.MetaFlagBytes('k', m.Key)
			if m.Base64 {
				c.w.MetaFlag('b')
			}
		case 'O':
			c.w.MetaFlagBytes('O', t[1:])
		}
	}
}

// metaGet serves mg: with v a reservation, as one key of a get (T sets
// the lease, as gat); without v a touch (T) or the question whether this
// connection holds a reservation on the key.
func (c *conn) metaGet(cmd *mcproto.Command) {
	m := &cmd.Meta
	switch {
	case m.Value:
		var lease leaseAsk
		if m.HasTTL {
			lease = leaseFromExptime(cmd.Exptime)
		}
		it, o := c.sess.get(cmd.Op, cmd.Keys[0], lease)
		if o.kind != outHit {
			c.metaReply(cmd, o, nil)
			return
		}
		c.w.MetaValue(len(it.body))
		c.metaFlags(m, metaItemFlags, it)
		c.w.MetaEnd()
		c.w.MetaData(it.body)
		c.ackAfterWrite(it)
	case m.HasTTL:
		// dalli's touch: mg <key> T<ttl>.
		it, o := c.sess.touch(cmd.Op, cmd.Keys[0], cmd.Exptime)
		c.metaReply(cmd, o, it)
	default:
		it, o := c.sess.holds(cmd.Op, cmd.Keys[0])
		c.metaReply(cmd, o, it)
	}
}

// metaSet serves ms: a publish, whatever the mode (a queue has no add,
// replace, append or prepend); with C<id>, an ack by id as text cas.
func (c *conn) metaSet(cmd *mcproto.Command) {
	if cmd.Meta.HasCas {
		c.metaReply(cmd, c.sess.ackByID(cmd.Op, cmd.Keys[0], cmd.Cas, stored), nil)
		return
	}
	c.metaReply(cmd, c.sess.set(cmd.Op, cmd.Keys[0], cmd.Flags, cmd.Exptime, cmd.Data), nil)
}

// metaDelete serves md: ack this connection's reservation on the queue, or
// with C<id> the reservation with that id from any connection.
func (c *conn) metaDelete(cmd *mcproto.Command) {
	if cmd.Meta.HasCas {
		c.metaReply(cmd, c.sess.ackByID(cmd.Op, cmd.Keys[0], cmd.Cas, deleted), nil)
		return
	}
	c.metaReply(cmd, c.sess.delete(cmd.Op, cmd.Keys[0]), nil)
}

// metaReply spells an outcome as "<code> <flags>\r\n". q hides the
// successes (HD) and mg's misses (EN), never NS or NF; errors are spelled
// as in the text protocol. it is the message an mg reply tells of.
//
// Every ms reply (HD, NS, NF) carries the c, k, s and O flags asked for, as
// memcached's does. memcached's c is the stored item's new cas, or 0 when
// nothing was stored. Here a cas is a reservation id, and no reservation
// results from an ms: a publish makes a message that nobody holds yet, and
// ms C<id> acks (ends) the reservation it names. So c is always c0; s is
// the size of the value sent.
func (c *conn) metaReply(cmd *mcproto.Command, o outcome, it *item) {
	m := &cmd.Meta
	plain := metaPlainFlags
	if cmd.Op == mcproto.OpMetaSet {
		plain = metaStoreFlags
		it = &item{body: cmd.Data}
	}
	switch o.kind {
	case outHit, outTouched, outStored, outDeleted:
		if m.Quiet {
			return
		}
		allowed := plain
		if it != nil && cmd.Op != mcproto.OpMetaSet {
			allowed = metaItemFlags
		}
		c.writeMeta(m, mcproto.MetaHit, allowed, it)
	case outMiss, outNotFound:
		switch {
		case cmd.Op != mcproto.OpMetaGet:
			c.writeMeta(m, mcproto.MetaNotFound, plain, it)
		case !m.Quiet:
			c.writeMeta(m, mcproto.MetaMiss, plain, nil)
		}
	case outNotStored:
		c.writeMeta(m, mcproto.MetaNotStored, plain, it)
	default:
		c.reply(cmd, o)
	}
}

// writeMeta writes "<code> <flags>\r\n".
func (c *conn) writeMeta(m *mcproto.MetaFlags, code, allowed string, it *item) {
	c.w.MetaCode(code)
	c.metaFlags(m, allowed, it)
	c.w.MetaEnd()
}
