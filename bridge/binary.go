package bridge

import (
	"bufio"
	"bytes"
	"errors"
	"time"

	"github.com/mcbridge/mcbridge/mcproto"
)

// binaryConn is the state of a connection that speaks the binary protocol
// (its first byte was 0x80). Its commands run on the same session as text
// ones: reserve, store, ack, ackID, touch.
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
	for {
		// The same deadlines as the text loop.
		if _, reason, ok := c.awaitCommand(); !ok {
			return reason
		}
		req, err := b.r.Next()
		if err != nil {
			if reason, done := b.requestError(req, err); done {
				return reason
			}
		} else if quit := b.dispatch(req); quit {
			_ = b.flush()
			return closeClientQuit
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
	var status mcproto.BinStatus
	var msg string
	switch {
	case errors.Is(err, mcproto.ErrTooLarge):
		status, msg = mcproto.BinStatusTooLarge, mcproto.BinMsgTooLarge
		b.count(req.Opcode, resultServerError)
	case errors.Is(err, mcproto.ErrBinaryInvalid), errors.Is(err, mcproto.ErrBinaryBodyTooLong):
		status, msg = mcproto.BinStatusInvalidArgs, mcproto.BinMsgInvalidArgs
		b.count(req.Opcode, resultClientError)
	case errors.Is(err, mcproto.ErrBadMagic):
		b.srv.log.Debug("binary request with bad magic", "remote", b.nc.RemoteAddr().String(), "offset", b.r.Offset())
		b.srv.metrics.commands.WithLabelValues("invalid", resultClientError).Inc()
		return closeReadError, true
	default:
		return b.readFailure(err, closeReadTimeout), true
	}
	b.w.Status(req.Opcode, status, req.Opaque, msg)
	if errors.Is(err, mcproto.ErrBinaryBodyTooLong) {
		b.srv.log.Debug("binary request body too long", "remote", b.nc.RemoteAddr().String(), "opcode", req.Opcode.String())
		_ = b.flush()
		return closeLineTooLong, true
	}
	return 0, false
}

// count feeds mcbridge_commands_total under the text protocol's command
// word, so that a dashboard sums every framing of one operation.
func (b *binaryConn) count(op mcproto.BinOpcode, result string) {
	b.srv.metrics.commands.WithLabelValues(binaryLabel(op).String(), result).Inc()
}

// binaryLabel maps an opcode to the text command it does.
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
		return mcproto.OpMetaNoop
	}
	return mcproto.OpUnknown
}

// dispatch runs one request. It reports whether the client quit.
func (b *binaryConn) dispatch(req *mcproto.BinaryRequest) (quit bool) {
	op := req.Opcode
	switch op {
	case mcproto.BinGet, mcproto.BinGetQ, mcproto.BinGetK, mcproto.BinGetKQ,
		mcproto.BinGAT, mcproto.BinGATQ, mcproto.BinGATK, mcproto.BinGATKQ:
		b.get(req)
	case mcproto.BinSet, mcproto.BinSetQ:
		if req.Cas != 0 {
			b.casAck(req)
		} else {
			b.set(req)
		}
	case mcproto.BinDelete, mcproto.BinDeleteQ:
		b.delete(req)
	case mcproto.BinTouch:
		b.touch(req)
	case mcproto.BinNoop:
		b.count(op, resultOK)
		b.w.Status(op, mcproto.BinStatusOK, req.Opaque, "")
		// The client waits for this reply to learn that the quiet requests
		// before it are done: never hold it behind a later slow request.
		_ = b.flush()
	case mcproto.BinVersion:
		b.count(op, resultOK)
		b.w.Status(op, mcproto.BinStatusOK, req.Opaque, Version)
	case mcproto.BinVerbosity:
		b.count(op, resultOK)
		b.w.Status(op, mcproto.BinStatusOK, req.Opaque, "")
	case mcproto.BinStat:
		b.stat(req)
	case mcproto.BinFlush, mcproto.BinFlushQ:
		b.srv.logFlushAll(b.nc.RemoteAddr())
		b.count(op, resultOK)
		b.ok(req)
	case mcproto.BinQuit:
		b.count(op, resultOK)
		b.w.Status(op, mcproto.BinStatusOK, req.Opaque, "")
		return true
	case mcproto.BinQuitQ:
		b.count(op, resultOK)
		return true
	default:
		if op.Known() {
			// add, replace, append, prepend, incr, decr, SASL: meaningless
			// on a queue (the text protocol's CLIENT_ERROR ... not supported).
			b.count(op, resultClientError)
			b.w.Status(op, mcproto.BinStatusNotSupported, req.Opaque, mcproto.BinMsgNotSupported)
			return false
		}
		b.count(op, resultError)
		b.w.Status(op, mcproto.BinStatusUnknownCommand, req.Opaque, mcproto.BinMsgUnknownCommand)
	}
	return false
}

// ok answers success, unless the opcode is quiet.
func (b *binaryConn) ok(req *mcproto.BinaryRequest) {
	if !req.Opcode.Quiet() {
		b.w.Status(req.Opcode, mcproto.BinStatusOK, req.Opaque, "")
	}
}

// notFound answers a miss or a missing reservation; errors are sent even
// for quiet opcodes, except the get family's misses.
func (b *binaryConn) notFound(req *mcproto.BinaryRequest) {
	b.w.Status(req.Opcode, mcproto.BinStatusKeyNotFound, req.Opaque, mcproto.BinMsgNotFound)
}

func (b *binaryConn) invalid(req *mcproto.BinaryRequest) {
	b.count(req.Opcode, resultClientError)
	b.w.Status(req.Opcode, mcproto.BinStatusInvalidArgs, req.Opaque, mcproto.BinMsgInvalidArgs)
}

// replyError answers a failed session operation: not stored, or the
// broker's trouble with its reason as the body.
func (b *binaryConn) replyError(req *mcproto.BinaryRequest, err error) {
	var se *serverError
	switch {
	case errors.Is(err, errNotStored):
		b.count(req.Opcode, resultNotStored)
		b.w.Status(req.Opcode, mcproto.BinStatusNotStored, req.Opaque, mcproto.BinMsgNotStored)
	case errors.As(err, &se):
		b.count(req.Opcode, resultServerError)
		b.w.Status(req.Opcode, mcproto.BinStatusInternalError, req.Opaque, se.msg)
	default:
		b.count(req.Opcode, resultServerError)
		b.w.Status(req.Opcode, mcproto.BinStatusInternalError, req.Opaque, "internal error")
	}
}

// get serves get/getq/getk/getkq and gat/gatq/gatk/gatkq: one key, kestrel
// options allowed, as one key of a text get.
func (b *binaryConn) get(req *mcproto.BinaryRequest) {
	op := req.Opcode
	q, opts, ok := splitRetrievalKey(req.Key)
	if !ok {
		b.invalid(req)
		return
	}
	var lease time.Duration
	var leaseSet bool
	switch op {
	case mcproto.BinGAT, mcproto.BinGATQ, mcproto.BinGATK, mcproto.BinGATKQ:
		// The binary exptime is unsigned, so it never asks for a peek, but
		// a unix time in the past does.
		var requeue bool
		lease, requeue = leaseFor(req.Exptime, 0, time.Now())
		leaseSet = req.Exptime != 0
		if requeue && !opts.Any() {
			opts.Peek = true
		}
	}
	b.srv.stats.cmdGet.Add(1)
	it, err := b.retrieveOne(retrievalKey{key: req.Key, queue: string(q), opts: opts}, lease, leaseSet)
	if err != nil {
		b.replyError(req, err)
		return
	}
	if it == nil {
		b.srv.stats.getMisses.Add(1)
		b.count(op, resultMiss)
		switch op {
		case mcproto.BinGetQ, mcproto.BinGetKQ, mcproto.BinGATQ, mcproto.BinGATKQ:
		case mcproto.BinGetK, mcproto.BinGATK:
			// memcached returns the key, not a message, on getk's miss.
			b.w.KeyStatus(op, mcproto.BinStatusKeyNotFound, req.Opaque, req.Key)
		default:
			b.notFound(req)
		}
		return
	}
	b.srv.stats.getHits.Add(1)
	b.count(op, resultHit)
	var key []byte
	switch op {
	case mcproto.BinGetK, mcproto.BinGetKQ, mcproto.BinGATK, mcproto.BinGATKQ:
		key = req.Key
	}
	b.w.Item(op, req.Opaque, it.cas, it.flags, key, it.body)
	b.ackAfterWrite(it)
}

// set publishes, as text set.
func (b *binaryConn) set(req *mcproto.BinaryRequest) {
	key, ok := queueName(req.Key)
	if !ok {
		b.invalid(req)
		return
	}
	b.srv.stats.cmdSet.Add(1)
	if err := b.sess.store(b.srv.ctx, key, req.Flags, req.Exptime, req.Value); err != nil {
		b.replyError(req, err)
		return
	}
	b.count(req.Opcode, resultStored)
	b.ok(req)
}

// casAck is a set with a cas: like text cas, it acks the reservation with
// that id from any connection, and the value is ignored.
func (b *binaryConn) casAck(req *mcproto.BinaryRequest) {
	b.ackByID(req, resultStored)
}

func (b *binaryConn) ackByID(req *mcproto.BinaryRequest, hit string) {
	b.onHeld(req, func(q string) bool { return b.sess.ackID(q, req.Cas) }, hit)
}

// delete acks: with a cas, the reservation with that id from any
// connection; without, this connection's reservation on the queue.
func (b *binaryConn) delete(req *mcproto.BinaryRequest) {
	if req.Cas != 0 {
		b.ackByID(req, resultDeleted)
		return
	}
	b.onHeld(req, b.sess.ack, resultDeleted)
}

// onHeld runs an ack on the queue the request names and answers success or
// a miss, counting it as a delete.
func (b *binaryConn) onHeld(req *mcproto.BinaryRequest, ack func(queue string) bool, hit string) {
	queue, ok := queueName(req.Key)
	if !ok {
		b.invalid(req)
		return
	}
	if ack(queue) {
		b.srv.stats.deleteHits.Add(1)
		b.count(req.Opcode, hit)
		b.ok(req)
		return
	}
	b.srv.stats.deleteMisses.Add(1)
	b.count(req.Opcode, resultNotFound)
	b.notFound(req)
}

// touch sets the lease of this connection's reservation on the queue. Its
// reply carries the message's flags and reservation id, as memcached's
// carries the item's flags and cas.
func (b *binaryConn) touch(req *mcproto.BinaryRequest) {
	queue, ok := queueName(req.Key)
	if !ok {
		b.invalid(req)
		return
	}
	b.srv.stats.cmdTouch.Add(1)
	r := b.sess.heldOn(queue)
	if r != nil && b.sess.touch(queue, req.Exptime) {
		b.srv.stats.touchHits.Add(1)
		b.count(req.Opcode, resultTouched)
		b.w.Item(req.Opcode, req.Opaque, r.id, r.flags, nil, nil)
		return
	}
	b.srv.stats.touchMisses.Add(1)
	b.count(req.Opcode, resultNotFound)
	b.notFound(req)
}

// stat sends the text protocol's stats listing (same groups, same names) as
// binary entries. An unknown group is a miss, as in memcached.
func (b *binaryConn) stat(req *mcproto.BinaryRequest) {
	cmd := &mcproto.Command{Op: mcproto.OpStats}
	if len(req.Key) > 0 {
		cmd.Args = [][]byte{req.Key}
	}
	// Render with the text code into a buffer, then reframe each line.
	var buf bytes.Buffer
	text := b.conn.w
	b.conn.w = mcproto.NewWriter(bufio.NewWriter(&buf))
	b.stats(cmd)
	_ = b.conn.w.Flush()
	b.conn.w = text

	out := buf.Bytes()
	for len(out) > 0 {
		line := out
		if i := bytes.Index(out, []byte("\r\n")); i >= 0 {
			line, out = out[:i], out[i+2:]
		} else {
			out = nil
		}
		rest, ok := bytes.CutPrefix(line, []byte("STAT "))
		if !ok {
			if string(line) != "END" {
				b.notFound(req)
				return
			}
			continue
		}
		name, value, _ := bytes.Cut(rest, []byte(" "))
		b.w.Stat(req.Opaque, name, value)
	}
	b.w.Stat(req.Opaque, nil, nil)
}
