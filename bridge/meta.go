package bridge

import (
	"errors"
	"strings"
	"time"

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
	metaStoreFlags = "ckO"    // HD of ms (c is 0: a published message has no reservation yet)
	metaPlainFlags = "kO"     // EN, NF, NS, and HD of md
)

// metaItem is what an mg reply can tell about a message.
type metaItem struct {
	cas   uint64
	flags uint32
	size  int
}

// metaFlags writes the return flags that the client asked for and that
// reply allows, in the client's order.
func (c *conn) metaFlags(m *mcproto.MetaFlags, allowed string, it metaItem) {
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
			c.w.MetaFlagUint('s', uint64(it.size))
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

// metaReply writes "<code> <flags>\r\n".
func (c *conn) metaReply(cmd *mcproto.Command, code, allowed string, it metaItem) {
	c.w.MetaCode(code)
	c.metaFlags(&cmd.Meta, allowed, it)
	c.w.MetaEnd()
}

// metaGet serves mg. Only mg with v reserves.
func (c *conn) metaGet(cmd *mcproto.Command) {
	m := &cmd.Meta
	if m.Value {
		c.metaReserve(cmd)
		return
	}
	queue, ok := queueName(cmd.Keys[0])
	if !ok {
		c.clientError(cmd)
		return
	}
	r := c.sess.heldOn(queue)
	var held bool
	if m.HasTTL {
		// dalli's touch: mg <key> T<ttl>.
		c.srv.stats.cmdTouch.Add(1)
		held = r != nil && c.sess.touch(queue, cmd.Exptime)
		if held {
			c.srv.stats.touchHits.Add(1)
			c.count(cmd, resultTouched)
		} else {
			c.srv.stats.touchMisses.Add(1)
			c.count(cmd, resultNotFound)
		}
	} else {
		held = r != nil && !r.ended.Load()
		if held {
			c.count(cmd, resultHit)
		} else {
			c.count(cmd, resultMiss)
		}
	}
	if m.Quiet {
		return
	}
	if !held {
		c.metaReply(cmd, mcproto.MetaMiss, metaPlainFlags, metaItem{})
		return
	}
	c.metaReply(cmd, mcproto.MetaHit, metaItemFlags, metaItem{cas: r.id, flags: r.flags, size: len(r.body)})
}

// metaReserve is mg with v: one key of a get (kestrel options allowed),
// with T as gat's lease.
func (c *conn) metaReserve(cmd *mcproto.Command) {
	m := &cmd.Meta
	q, opts, ok := splitRetrievalKey(cmd.Keys[0])
	if !ok {
		c.clientError(cmd)
		return
	}
	var lease time.Duration
	var leaseSet bool
	if m.HasTTL {
		var requeue bool
		lease, requeue = leaseFor(cmd.Exptime, 0, time.Now())
		leaseSet = cmd.Exptime != 0
		if requeue && !opts.Any() {
			// A lease over before it starts: hand it out and put it back.
			opts.Peek = true
		}
	}
	c.srv.stats.cmdGet.Add(1)
	it, err := c.retrieveOne(retrievalKey{key: cmd.Keys[0], queue: string(q), opts: opts}, lease, leaseSet)
	if err != nil {
		c.replyError(cmd, err)
		return
	}
	if it == nil {
		c.srv.stats.getMisses.Add(1)
		c.count(cmd, resultMiss)
		if !m.Quiet {
			c.metaReply(cmd, mcproto.MetaMiss, metaPlainFlags, metaItem{})
		}
		return
	}
	c.srv.stats.getHits.Add(1)
	c.count(cmd, resultHit)
	c.w.MetaValue(len(it.body))
	c.metaFlags(m, metaItemFlags, metaItem{cas: it.cas, flags: it.flags, size: len(it.body)})
	c.w.MetaEnd()
	c.w.MetaData(it.body)
	c.ackAfterWrite(it)
}

// metaSet serves ms: a publish, whatever the mode (a queue has no add,
// replace, append or prepend); with C<id>, an ack by id as text cas.
func (c *conn) metaSet(cmd *mcproto.Command) {
	m := &cmd.Meta
	queue, ok := queueName(cmd.Keys[0])
	if !ok {
		c.clientError(cmd)
		return
	}
	if m.HasCas {
		c.metaAckID(cmd, queue, resultStored)
		return
	}
	c.srv.stats.cmdSet.Add(1)
	err := c.sess.store(c.srv.ctx, queue, cmd.Flags, cmd.Exptime, cmd.Data)
	switch {
	case err == nil:
		c.count(cmd, resultStored)
		if !m.Quiet {
			c.metaReply(cmd, mcproto.MetaHit, metaStoreFlags, metaItem{})
		}
	case errors.Is(err, errNotStored):
		c.count(cmd, resultNotStored)
		c.metaReply(cmd, mcproto.MetaNotStored, metaPlainFlags, metaItem{})
	default:
		c.replyError(cmd, err)
	}
}

// metaDelete serves md: ack this connection's reservation on the queue, or
// with C<id> the reservation with that id from any connection.
func (c *conn) metaDelete(cmd *mcproto.Command) {
	queue, ok := queueName(cmd.Keys[0])
	if !ok {
		c.clientError(cmd)
		return
	}
	if cmd.Meta.HasCas {
		c.metaAckID(cmd, queue, resultDeleted)
		return
	}
	c.metaAcked(cmd, c.sess.ack(queue), resultDeleted)
}

func (c *conn) metaAckID(cmd *mcproto.Command, queue, hit string) {
	c.metaAcked(cmd, c.sess.ackID(queue, cmd.Cas), hit)
}

// metaAcked answers an ack: HD (hidden by q), or NF (never hidden, as in
// memcached).
func (c *conn) metaAcked(cmd *mcproto.Command, acked bool, hit string) {
	if acked {
		c.srv.stats.deleteHits.Add(1)
		c.count(cmd, hit)
		if !cmd.Meta.Quiet {
			c.metaReply(cmd, mcproto.MetaHit, metaPlainFlags, metaItem{})
		}
		return
	}
	c.srv.stats.deleteMisses.Add(1)
	c.count(cmd, resultNotFound)
	c.metaReply(cmd, mcproto.MetaNotFound, metaPlainFlags, metaItem{})
}

// metaNoop serves mn: clients send it after quiet commands to learn that
// they are done.
func (c *conn) metaNoop(cmd *mcproto.Command) {
	c.count(cmd, resultOK)
	c.w.MetaNoop()
}
