package bridge

import (
	"bytes"
	"errors"
	"sync/atomic"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/mcproto"
)

// Result label values of mcbridge_commands_total: a fixed set.
const (
	resultHit         = "hit"
	resultMiss        = "miss"
	resultStored      = "stored"
	resultNotStored   = "not_stored"
	resultDeleted     = "deleted"
	resultNotFound    = "not_found"
	resultTouched     = "touched"
	resultOK          = "ok"
	resultError       = "error"
	resultClientError = "client_error"
	resultServerError = "server_error"
)

// notSupported is the reply tail for memcache commands that mean nothing on
// a queue.
const notSupported = " not supported by queue gateway"

// dispatch runs one text command. It reports whether the client quit.
func (c *conn) dispatch(cmd *mcproto.Command) (quit bool) {
	switch cmd.Op {
	case mcproto.OpGet, mcproto.OpGets:
		c.retrieve(cmd, cmd.Op == mcproto.OpGets, 0, false, false)
	case mcproto.OpGat, mcproto.OpGats:
		// A lease that is over before it starts (negative exptime) hands
		// the message out and puts it straight back: a peek.
		lease, requeue := leaseFor(cmd.Exptime, 0, time.Now())
		c.retrieve(cmd, cmd.Op == mcproto.OpGats, lease, cmd.Exptime != 0, requeue)
	case mcproto.OpSet:
		c.set(cmd)
	case mcproto.OpCas:
		c.cas(cmd)
	case mcproto.OpDelete:
		c.delete(cmd)
	case mcproto.OpTouch:
		c.touch(cmd)
	case mcproto.OpStats:
		c.stats(cmd)
	case mcproto.OpVersion:
		c.w.Version(Version)
		c.count(cmd, resultOK)
	case mcproto.OpVerbosity:
		c.count(cmd, resultOK)
		if !cmd.Noreply {
			c.w.OK()
		}
	case mcproto.OpFlushAll:
		// Clients send it on their own (test suites, cache resets); a
		// queue must never lose messages to it.
		c.srv.logFlushAll(c.nc.RemoteAddr())
		c.count(cmd, resultOK)
		if !cmd.Noreply {
			c.w.OK()
		}
	case mcproto.OpQuit:
		c.count(cmd, resultOK)
		return true
	case mcproto.OpMetaGet:
		c.metaGet(cmd)
	case mcproto.OpMetaSet:
		c.metaSet(cmd)
	case mcproto.OpMetaDelete:
		c.metaDelete(cmd)
	case mcproto.OpMetaNoop:
		c.metaNoop(cmd)
	case mcproto.OpAdd, mcproto.OpReplace, mcproto.OpAppend, mcproto.OpPrepend, mcproto.OpIncr, mcproto.OpDecr:
		c.count(cmd, resultClientError)
		if !cmd.Noreply {
			c.w.ClientError(cmd.Op.String() + notSupported)
		}
	default:
		c.count(cmd, resultError)
		c.w.Error()
	}
	return false
}

func (c *conn) count(cmd *mcproto.Command, result string) {
	c.srv.metrics.commands.WithLabelValues(cmd.Op.String(), result).Inc()
}

// queueName checks a key of a non-retrieval command: kestrel options are
// only for retrievals, and a name the broker would refuse never reaches it.
func queueName(key []byte) (string, bool) {
	if bytes.IndexByte(key, '/') >= 0 || !amqp.ValidName(key) {
		return "", false
	}
	return string(key), true
}

// splitRetrievalKey splits a key of a retrieval command into its queue and its
// kestrel options; ok is false for bad options or a name the broker would
// refuse.
func splitRetrievalKey(key []byte) (queue []byte, opts mcproto.KeyOptions, ok bool) {
	queue, opts, err := mcproto.SplitKey(key)
	if err != nil || !amqp.ValidName(queue) {
		return nil, opts, false
	}
	return queue, opts, true
}

// replyError writes the reply for an operation's error.
func (c *conn) replyError(cmd *mcproto.Command, err error) {
	var se *serverError
	switch {
	case errors.Is(err, errNotStored):
		c.count(cmd, resultNotStored)
		if !cmd.Noreply {
			c.w.NotStored()
		}
	case errors.As(err, &se):
		c.count(cmd, resultServerError)
		if !cmd.Noreply {
			c.w.ServerError(se.msg)
		}
	default:
		c.count(cmd, resultServerError)
		if !cmd.Noreply {
			c.w.ServerError("internal error")
		}
	}
}

func (c *conn) clientError(cmd *mcproto.Command) {
	c.count(cmd, resultClientError)
	if !cmd.Noreply {
		c.w.ClientError(mcproto.MsgBadFormat)
	}
}

func (c *conn) set(cmd *mcproto.Command) {
	key, ok := queueName(cmd.Keys[0])
	if !ok {
		c.clientError(cmd)
		return
	}
	c.srv.stats.cmdSet.Add(1)
	if err := c.sess.store(c.srv.ctx, key, cmd.Flags, cmd.Exptime, cmd.Data); err != nil {
		c.replyError(cmd, err)
		return
	}
	c.count(cmd, resultStored)
	if !cmd.Noreply {
		c.w.Stored()
	}
}

// cas acks the reservation whose id is the cas unique, from any connection:
// gomemcache's CompareAndSwap after Get. The data block is ignored.
func (c *conn) cas(cmd *mcproto.Command) {
	st := &c.srv.stats
	c.onHeld(cmd, func(q string) bool { return c.sess.ackID(q, cmd.Cas) },
		&st.deleteHits, &st.deleteMisses, resultStored, c.w.Stored)
}

func (c *conn) delete(cmd *mcproto.Command) {
	st := &c.srv.stats
	c.onHeld(cmd, c.sess.ack, &st.deleteHits, &st.deleteMisses, resultDeleted, c.w.Deleted)
}

func (c *conn) touch(cmd *mcproto.Command) {
	st := &c.srv.stats
	c.onHeld(cmd, func(q string) bool { st.cmdTouch.Add(1); return c.sess.touch(q, cmd.Exptime) },
		&st.touchHits, &st.touchMisses, resultTouched, c.w.Touched)
}

// onHeld runs op, an operation on a reservation, on the queue the command
// names, and answers hit (writeHit) or NOT_FOUND.
func (c *conn) onHeld(cmd *mcproto.Command, op func(queue string) bool, hits, misses *atomic.Uint64, hitResult string, writeHit func()) {
	queue, ok := queueName(cmd.Keys[0])
	if !ok {
		c.clientError(cmd)
		return
	}
	if op(queue) {
		hits.Add(1)
		c.count(cmd, hitResult)
		if !cmd.Noreply {
			writeHit()
		}
		return
	}
	misses.Add(1)
	c.count(cmd, resultNotFound)
	if !cmd.Noreply {
		c.w.NotFound()
	}
}

// retrievalKey is one parsed key of a get line.
type retrievalKey struct {
	key   []byte // as sent: replies echo it
	queue string
	opts  mcproto.KeyOptions
}

// retrieve serves get, gets, gat and gats. Every key is checked before any
// message is reserved, so a bad key never leaves reservations behind.
func (c *conn) retrieve(cmd *mcproto.Command, withCas bool, lease time.Duration, leaseSet, peek bool) {
	keys := make([]retrievalKey, len(cmd.Keys))
	for i, k := range cmd.Keys {
		q, opts, ok := splitRetrievalKey(k)
		if !ok {
			c.clientError(cmd)
			return
		}
		if peek && !opts.Any() {
			opts.Peek = true
		}
		keys[i] = retrievalKey{key: k, queue: string(q), opts: opts}
	}
	items := c.items[:0]
	for _, k := range keys {
		c.srv.stats.cmdGet.Add(1)
		it, err := c.retrieveOne(k, lease, leaseSet)
		if err != nil {
			// The client sees none of this line's messages: give back
			// what it reserved.
			for _, it := range items {
				c.giveBack(it)
			}
			c.replyError(cmd, err)
			return
		}
		if it == nil {
			c.srv.stats.getMisses.Add(1)
			c.count(cmd, resultMiss)
		} else {
			c.srv.stats.getHits.Add(1)
			c.count(cmd, resultHit)
		}
		items = append(items, it)
	}
	for i, it := range items {
		if it == nil {
			continue
		}
		if withCas {
			c.w.ValueCas(keys[i].key, it.flags, it.body, it.cas)
		} else {
			c.w.Value(keys[i].key, it.flags, it.body)
		}
	}
	c.w.End()
	if hasAutoAck(items) {
		// Destructive reads are acked only once the client has the
		// bytes.
		c.sess.delivered(items, c.flush())
	}
	clear(items)
	c.items = items[:0]
}

func hasAutoAck(items []*item) bool {
	for _, it := range items {
		if it != nil && it.autoAck != nil {
			return true
		}
	}
	return false
}

// giveBack requeues an item the client never received.
func (c *conn) giveBack(it *item) {
	switch {
	case it == nil:
	case it.r != nil:
		if it.r.end() {
			c.srv.settle(it.r, settleRequeue, reasonAbort)
		}
	case it.autoAck != nil:
		_ = it.autoAck.Requeue()
	}
}

// retrieveOne applies a key's kestrel options and reserves the next
// message when they ask for one.
func (c *conn) retrieveOne(k retrievalKey, lease time.Duration, leaseSet bool) (*item, error) {
	o := k.opts
	switch {
	case o.Abort:
		c.sess.abort(k.queue)
		return nil, nil
	case o.Peek:
		return c.sess.peek(c.srv.ctx, k.queue)
	}
	if o.Close {
		c.sess.ack(k.queue)
		if !o.Open {
			return nil, nil
		}
	}
	if o.HasTimeout {
		// The wait holds up this connection: what is answered already
		// goes out first.
		if err := c.flush(); err != nil {
			return nil, nil
		}
		ctx, stop := c.watchClient()
		defer stop()
		return c.sess.reserveWait(ctx, k.queue, o.Timeout, lease, leaseSet)
	}
	return c.sess.reserve(c.srv.ctx, k.queue, lease, leaseSet)
}
