package bridge

import (
	"errors"

	"github.com/mcbridge/mcbridge/mcproto"
)

// The text protocol: each command becomes a session operation, and its
// outcome becomes memcached's reply words (reply).

// notSupportedTail ends the reply to memcache commands that mean nothing on
// a queue.
const notSupportedTail = " not supported by queue gateway"

// textLoop serves the connection in the text protocol (meta commands
// included) until it ends, or hands it to binaryLoop when its first byte
// is the binary magic.
func (c *conn) textLoop() closeReason {
	for {
		first, reason, ok := c.awaitCommand()
		if !ok {
			return reason
		}
		if first == mcproto.BinaryRequestMagic && !c.started {
			// The binary protocol's magic byte opening the connection:
			// it speaks binary for the rest of its life. Later in a text
			// connection the byte is just a bad command.
			return c.binaryLoop()
		}
		c.started = true
		cmd, err := c.p.Next()
		if err != nil {
			// Only cmd's Op and Noreply are used below, which outlive
			// commandDone.
			c.commandDone()
			if cmd != nil && cmd.Noreply {
				// memcached stays silent on noreply commands even when
				// they fail; clients such as pymemcache rely on it.
				c.srv.count(cmd.Op, tallyNone, readOutcome(err))
				continue
			}
			if c.w.ErrorReply(err) {
				// A command the parser recognised (an oversized or
				// malformed set) counts under its own name; only a line
				// that names no command is "invalid".
				label := labelInvalid
				if cmd != nil {
					label = cmd.Op.String()
				}
				c.srv.countAs(label, tallyNone, readOutcome(err))
				if errors.Is(err, mcproto.ErrLineTooLong) {
					c.srv.log.Debug("line too long", "remote", c.nc.RemoteAddr().String())
					_ = c.flush()
					return closeLineTooLong
				}
				c.srv.log.Debug("bad command", "err", err, "line", mcproto.Snippet(c.p.Line()))
				continue
			}
			return c.readFailure(err, closeReadTimeout)
		}
		quit := c.dispatch(cmd)
		c.commandDone()
		if quit {
			_ = c.flush()
			return closeClientQuit
		}
		// Replies go out when the next read would block (flushingReader).
		if err := c.w.Err(); err != nil {
			return closeWriteError
		}
	}
}

// dispatch runs one text or meta command. It reports whether the client
// quit.
func (c *conn) dispatch(cmd *mcproto.Command) (quit bool) {
	if c.textAuth(cmd) {
		return false
	}
	switch cmd.Op {
	case mcproto.OpGet, mcproto.OpGets:
		c.retrieve(cmd, leaseAsk{})
	case mcproto.OpGat, mcproto.OpGats:
		c.retrieve(cmd, leaseFromExptime(cmd.Exptime))
	case mcproto.OpSet:
		c.reply(cmd, c.sess.set(cmd.Op, cmd.Keys[0], cmd.Flags, cmd.Exptime, cmd.Data))
	case mcproto.OpCas:
		// gomemcache's CompareAndSwap after Get: ack by the id that gets
		// returned as cas unique. The data block is ignored.
		c.reply(cmd, c.sess.ackByID(cmd.Op, cmd.Keys[0], cmd.Cas, stored))
	case mcproto.OpDelete:
		c.reply(cmd, c.sess.delete(cmd.Op, cmd.Keys[0]))
	case mcproto.OpTouch:
		_, o := c.sess.touch(cmd.Op, cmd.Keys[0], cmd.Exptime)
		c.reply(cmd, o)
	case mcproto.OpStats:
		c.stats(cmd)
	case mcproto.OpVersion:
		c.srv.count(cmd.Op, tallyNone, served)
		c.w.Version(Version)
	case mcproto.OpVerbosity:
		c.reply(cmd, c.srv.count(cmd.Op, tallyNone, served))
	case mcproto.OpFlushAll:
		// Clients send it on their own (test suites, cache resets); a
		// queue must never lose messages to it.
		c.srv.logFlushAll(c.nc.RemoteAddr())
		c.reply(cmd, c.srv.count(cmd.Op, tallyNone, served))
	case mcproto.OpQuit:
		c.srv.count(cmd.Op, tallyNone, served)
		return true
	case mcproto.OpMetaGet:
		c.metaGet(cmd)
	case mcproto.OpMetaSet:
		c.metaSet(cmd)
	case mcproto.OpMetaDelete:
		c.metaDelete(cmd)
	case mcproto.OpMetaNoop:
		c.srv.count(cmd.Op, tallyNone, served)
		c.w.MetaNoop()
	case mcproto.OpAdd, mcproto.OpReplace, mcproto.OpAppend, mcproto.OpPrepend, mcproto.OpIncr, mcproto.OpDecr:
		c.reply(cmd, c.srv.count(cmd.Op, tallyNone, notSupported))
	default:
		c.reply(cmd, c.srv.count(cmd.Op, tallyNone, unknownCmd))
	}
	return false
}

// reply spells an outcome in the text protocol; noreply silences it.
// Retrievals spell their hits and misses themselves (retrieve), and a line
// the parser refused is answered by mcproto's ErrorReply.
func (c *conn) reply(cmd *mcproto.Command, o outcome) {
	if cmd.Noreply {
		return
	}
	w := c.w
	switch o.kind {
	case outOK:
		w.OK()
	case outStored:
		w.Stored()
	case outNotStored:
		w.NotStored()
	case outDeleted:
		w.Deleted()
	case outNotFound:
		w.NotFound()
	case outTouched:
		w.Touched()
	case outUnknownCommand:
		w.Error()
	case outBadRequest:
		w.ClientError(mcproto.MsgBadFormat)
	case outNotSupported:
		w.ClientError(cmd.Op.String() + notSupportedTail)
	case outTooLarge:
		w.ServerError(mcproto.MsgObjectTooLarge)
	case outServerError:
		w.ServerError(o.msg)
	case outUnauthenticated:
		w.ClientError(msgUnauthenticated)
	case outAccessRefused:
		w.ClientError(msgAccessRefused)
	}
}

// retrieve serves get, gets, gat and gats: a VALUE per hit, then END.
func (c *conn) retrieve(cmd *mcproto.Command, lease leaseAsk) {
	items, o := c.sess.getAll(cmd.Op, cmd.Keys, lease, c.items[:0])
	if o.kind == outOK {
		withCas := cmd.Op == mcproto.OpGets || cmd.Op == mcproto.OpGats
		for i, it := range items {
			switch {
			case it == nil:
			case withCas:
				c.w.ValueCas(cmd.Keys[i], it.flags, it.body, it.cas)
			default:
				c.w.Value(cmd.Keys[i], it.flags, it.body)
			}
		}
		c.w.End()
		if hasAutoAck(items) {
			// Destructive reads are acked only once the client has the
			// bytes.
			c.sess.delivered(items, c.flush())
		}
	} else {
		c.reply(cmd, o)
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

// stats writes a stats listing: STAT lines, then END.
func (c *conn) stats(cmd *mcproto.Command) {
	list, known := c.srv.statsListing(cmd.Args, c.sess.tenant())
	if !known {
		c.reply(cmd, c.srv.count(cmd.Op, tallyNone, unknownCmd))
		return
	}
	c.srv.count(cmd.Op, tallyNone, served)
	for _, st := range list {
		c.w.StatString(st.name, st.value)
	}
	c.w.End()
}
