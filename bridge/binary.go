package bridge

import (
	"errors"

	"github.com/mcbridge/mcbridge/mcproto"
)

// binaryConn is the state of a connection that speaks the binary protocol
// (its first byte was 0x80). Its requests run the same session operations
// as text commands, and their outcomes become binary statuses (reply).
type binaryConn struct {
	*conn
	r *mcproto.BinaryReader
	w *mcproto.BinaryWriter
}

// binaryLoop serves a binary-protocol connection until it ends.
func (c *conn) binaryLoop() closeReason {
	b := &binaryConn{
		conn: c,
		r:    mcproto.NewBinaryReader(c.br, int(c.srv.cfg.Limits.MaxItemSize)),
		w:    mcproto.NewBinaryWriter(c.bw),
	}
	c.replies = b.w
	b.r.SetAdmit(c.admit)
	c.bodies = b.r
	for {
		// The same deadlines as the text loop.
		if _, reason, ok := c.awaitCommand(); !ok {
			return reason
		}
		req, err := b.r.Next()
		if err != nil {
			reason, done := b.requestError(req, err)
			c.commandDone()
			if done {
				return reason
			}
		} else {
			quit := b.dispatch(req)
			c.commandDone()
			if quit {
				_ = b.flush()
				return closeClientQuit
			}
		}
		// Replies to pipelined requests go out together.
		if c.br.Buffered() == 0 {
			if err := b.flush(); err != nil {
				return closeWriteError
			}
		}
	}
}

// requestError answers a request the reader refused. done: the connection
// ends, for that reason.
func (b *binaryConn) requestError(req *mcproto.BinaryRequest, err error) (closeReason, bool) {
	var o outcome
	switch {
	case errors.Is(err, mcproto.ErrTooLarge):
		o = tooLarge
	case errors.Is(err, mcproto.ErrBinaryInvalid), errors.Is(err, mcproto.ErrBinaryBodyTooLong):
		o = badRequest
	case errors.Is(err, mcproto.ErrBadMagic):
		b.srv.log.Debug("binary request with bad magic", "remote", b.nc.RemoteAddr().String(), "offset", b.r.Offset())
		b.srv.countAs(labelInvalid, tallyNone, badRequest)
		return closeReadError, true
	default:
		return b.readFailure(err, closeReadTimeout), true
	}
	b.reply(req, b.srv.count(binaryLabel(req.Opcode), tallyNone, o))
	if errors.Is(err, mcproto.ErrBinaryBodyTooLong) {
		b.srv.log.Debug("binary request body too long", "remote", b.nc.RemoteAddr().String(), "opcode", req.Opcode.String())
		_ = b.flush()
		return closeLineTooLong, true
	}
	return 0, false
}

// binaryLabel maps an opcode to the text command it does: its label in
// mcbridge_commands_total.
func binaryLabel(op mcproto.BinOpcode) mcproto.Op {
	switch op {
	case mcproto.BinGet, mcproto.BinGetQ, mcproto.BinGetK, mcproto.BinGetKQ:
		return mcproto.OpGet
	case mcproto.BinGAT, mcproto.BinGATQ, mcproto.BinGATK, mcproto.BinGATKQ:
		return mcproto.OpGat
	case mcproto.BinSet, mcproto.BinSetQ:
		return mcproto.OpSet
	case mcproto.BinAdd, mcproto.BinAddQ:
		return mcproto.OpAdd
	case mcproto.BinReplace, mcproto.BinReplaceQ:
		return mcproto.OpReplace
	case mcproto.BinAppend, mcproto.BinAppendQ:
		return mcproto.OpAppend
	case mcproto.BinPrepend, mcproto.BinPrependQ:
		return mcproto.OpPrepend
	case mcproto.BinIncrement, mcproto.BinIncrementQ:
		return mcproto.OpIncr
	case mcproto.BinDecrement, mcproto.BinDecrementQ:
		return mcproto.OpDecr
	case mcproto.BinDelete, mcproto.BinDeleteQ:
		return mcproto.OpDelete
	case mcproto.BinTouch:
		return mcproto.OpTouch
	case mcproto.BinStat:
		return mcproto.OpStats
	case mcproto.BinVersion:
		return mcproto.OpVersion
	case mcproto.BinVerbosity:
		return mcproto.OpVerbosity
	case mcproto.BinQuit, mcproto.BinQuitQ:
		return mcproto.OpQuit
	case mcproto.BinFlush, mcproto.BinFlushQ:
		return mcproto.OpFlushAll
	case mcproto.BinNoop:
		return mcproto.OpNoop
	}
	return mcproto.OpUnknown
}

// dispatch runs one request. It reports whether the client quit.
func (b *binaryConn) dispatch(req *mcproto.BinaryRequest) (quit bool) {
	op := req.Opcode
	label := binaryLabel(op)
	if handled, quit := b.binaryAuth(req); handled {
		return quit
	}
	switch op {
	case mcproto.BinGet, mcproto.BinGetQ, mcproto.BinGetK, mcproto.BinGetKQ:
		b.get(req, leaseAsk{})
	case mcproto.BinGAT, mcproto.BinGATQ, mcproto.BinGATK, mcproto.BinGATKQ:
		// The binary exptime is unsigned, so it never asks for a peek, but
		// a unix time in the past does.
		b.get(req, leaseFromExptime(req.Exptime))
	case mcproto.BinSet, mcproto.BinSetQ:
		if req.Cas != 0 {
			// Like text cas: ack the reservation with that id from any
			// connection; the value is ignored.
			b.reply(req, b.sess.ackByID(label, req.Key, req.Cas, stored))
		} else {
			b.reply(req, b.sess.set(label, req.Key, req.Flags, req.Exptime, req.Value))
		}
	case mcproto.BinDelete, mcproto.BinDeleteQ:
		if req.Cas != 0 {
			b.reply(req, b.sess.ackByID(label, req.Key, req.Cas, deleted))
		} else {
			b.reply(req, b.sess.delete(label, req.Key))
		}
	case mcproto.BinTouch:
		// Its reply carries the message's flags and reservation id, as
		// memcached's carries the item's flags and cas.
		it, o := b.sess.touch(label, req.Key, req.Exptime)
		if o.kind == outTouched {
			b.w.Item(op, req.Opaque, it.cas, it.flags, nil, nil)
		} else {
			b.reply(req, o)
		}
	case mcproto.BinNoop:
		b.reply(req, b.srv.count(label, tallyNone, served))
		// The client waits for this reply to learn that the quiet requests
		// before it are done: never hold it behind a later slow request.
		_ = b.flush()
	case mcproto.BinVersion:
		b.srv.count(label, tallyNone, served)
		b.w.Status(op, mcproto.BinStatusOK, req.Opaque, Version)
	case mcproto.BinVerbosity:
		b.reply(req, b.srv.count(label, tallyNone, served))
	case mcproto.BinStat:
		b.stat(req)
	case mcproto.BinFlush, mcproto.BinFlushQ:
		b.srv.logFlushAll(b.nc.RemoteAddr())
		b.reply(req, b.srv.count(label, tallyNone, served))
	case mcproto.BinQuit, mcproto.BinQuitQ:
		b.reply(req, b.srv.count(label, tallyNone, served))
		return true
	default:
		if op.Known() {
			// add, replace, append, prepend, incr, decr, SASL: meaningless
			// on a queue (the text protocol's CLIENT_ERROR ... not supported).
			b.reply(req, b.srv.count(label, tallyNone, notSupported))
		} else {
			b.reply(req, b.srv.count(label, tallyNone, unknownCmd))
		}
	}
	return false
}

// reply spells an outcome as a binary status. Quiet opcodes leave out
// successes and the get family's misses; errors are always sent. Hits are
// spelled by get and touch.
func (b *binaryConn) reply(req *mcproto.BinaryRequest, o outcome) {
	op := req.Opcode
	status, msg := mcproto.BinStatusOK, ""
	switch o.kind {
	case outStored, outDeleted, outTouched, outOK:
		if op.Quiet() {
			return
		}
	case outMiss:
		switch {
		case op.Quiet():
			return
		case op == mcproto.BinGetK || op == mcproto.BinGATK:
			// memcached returns the key, not a message, on getk's miss.
			b.w.KeyStatus(op, mcproto.BinStatusKeyNotFound, req.Opaque, req.Key)
			return
		}
		status, msg = mcproto.BinStatusKeyNotFound, mcproto.BinMsgNotFound
	case outNotFound:
		status, msg = mcproto.BinStatusKeyNotFound, mcproto.BinMsgNotFound
	case outNotStored:
		status, msg = mcproto.BinStatusNotStored, mcproto.BinMsgNotStored
	case outUnknownCommand:
		status, msg = mcproto.BinStatusUnknownCommand, mcproto.BinMsgUnknownCommand
	case outBadRequest:
		status, msg = mcproto.BinStatusInvalidArgs, mcproto.BinMsgInvalidArgs
	case outNotSupported:
		status, msg = mcproto.BinStatusNotSupported, mcproto.BinMsgNotSupported
	case outTooLarge:
		status, msg = mcproto.BinStatusTooLarge, mcproto.BinMsgTooLarge
	case outServerError:
		status, msg = mcproto.BinStatusInternalError, o.msg
	case outUnauthenticated:
		status, msg = mcproto.BinStatusAuthError, mcproto.BinMsgAuthFailure
	case outAccessRefused:
		status, msg = mcproto.BinStatusAuthError, binMsgAccessRefused
	}
	b.w.Status(op, status, req.Opaque, msg)
}

// get serves get/getq/getk/getkq and gat/gatq/gatk/gatkq: one key, kestrel
// options allowed, as one key of a text get.
func (b *binaryConn) get(req *mcproto.BinaryRequest, lease leaseAsk) {
	op := req.Opcode
	it, o := b.sess.get(binaryLabel(op), req.Key, lease)
	if o.kind != outHit {
		b.reply(req, o)
		return
	}
	var key []byte
	switch op {
	case mcproto.BinGetK, mcproto.BinGetKQ, mcproto.BinGATK, mcproto.BinGATKQ:
		key = req.Key
	}
	b.w.Item(op, req.Opaque, it.cas, it.flags, key, it.body)
	b.ackAfterWrite(it)
}

// stat sends a stats listing (the text protocol's groups and names) as
// binary entries, then the empty entry that ends it. An unknown group is
// a miss, as in memcached.
func (b *binaryConn) stat(req *mcproto.BinaryRequest) {
	var args [][]byte
	if len(req.Key) > 0 {
		args = [][]byte{req.Key}
	}
	list, known := b.srv.statsListing(args, b.sess.tenant())
	if !known {
		b.srv.count(mcproto.OpStats, tallyNone, unknownCmd)
		b.reply(req, notFound)
		return
	}
	b.srv.count(mcproto.OpStats, tallyNone, served)
	for _, st := range list {
		b.w.Stat(req.Opaque, []byte(st.name), []byte(st.value))
	}
	b.w.Stat(req.Opaque, nil, nil)
}
