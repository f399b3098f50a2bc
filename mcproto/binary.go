package mcproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The memcached binary protocol (protocol_binary.h, the "memcache binary protocol" draft): a 24-byte
// header, then extras, key and value, all lengths in the header, integers big-endian. A connection
// whose first byte is BinaryRequestMagic speaks it for its whole life.
const (
	BinaryRequestMagic  = 0x80
	BinaryResponseMagic = 0x81
	BinaryHeaderLen     = 24

	// maxBinaryOverhead is the most a request body holds besides its value: 255 bytes of extras
	// and a key of MaxKeyLen (longer keys are refused before their body is read).
	maxBinaryOverhead = 255 + MaxKeyLen

	// maxBinaryBody is memcached's ITEM_SIZE_MAX_UPPER_LIMIT: a request declaring a longer body is
	// answered at once and the connection closed (dispatch_bin_command), rather than swallowed
	// until the read deadline as a value merely over the item size is.
	maxBinaryBody = 1 << 30
)

// BinOpcode is a binary-protocol command.
type BinOpcode uint8

// The opcodes memcached 1.6 knows. mcbridge serves some; the others are answered with
// BinStatusNotSupported, and any opcode not listed here with BinStatusUnknownCommand.
const (
	BinGet        BinOpcode = 0x00
	BinSet        BinOpcode = 0x01
	BinAdd        BinOpcode = 0x02
	BinReplace    BinOpcode = 0x03
	BinDelete     BinOpcode = 0x04
	BinIncrement  BinOpcode = 0x05
	BinDecrement  BinOpcode = 0x06
	BinQuit       BinOpcode = 0x07
	BinFlush      BinOpcode = 0x08
	BinGetQ       BinOpcode = 0x09
	BinNoop       BinOpcode = 0x0a
	BinVersion    BinOpcode = 0x0b
	BinGetK       BinOpcode = 0x0c
	BinGetKQ      BinOpcode = 0x0d
	BinAppend     BinOpcode = 0x0e
	BinPrepend    BinOpcode = 0x0f
	BinStat       BinOpcode = 0x10
	BinSetQ       BinOpcode = 0x11
	BinAddQ       BinOpcode = 0x12
	BinReplaceQ   BinOpcode = 0x13
	BinDeleteQ    BinOpcode = 0x14
	BinIncrementQ BinOpcode = 0x15
	BinDecrementQ BinOpcode = 0x16
	BinQuitQ      BinOpcode = 0x17
	BinFlushQ     BinOpcode = 0x18
	BinAppendQ    BinOpcode = 0x19
	BinPrependQ   BinOpcode = 0x1a
	BinVerbosity  BinOpcode = 0x1b
	BinTouch      BinOpcode = 0x1c
	BinGAT        BinOpcode = 0x1d
	BinGATQ       BinOpcode = 0x1e
	BinGATK       BinOpcode = 0x23
	BinGATKQ      BinOpcode = 0x24
	BinSASLList   BinOpcode = 0x20
	BinSASLAuth   BinOpcode = 0x21
	BinSASLStep   BinOpcode = 0x22
)

// binOpNames are the opcode names (memcached's, lower case); String returns them so that they can
// serve as metric label values. Opcodes without a name are "unknown".
var binOpNames = [...]string{
	BinGet: "get", BinSet: "set", BinAdd: "add", BinReplace: "replace", BinDelete: "delete",
	BinIncrement: "incr", BinDecrement: "decr", BinQuit: "quit", BinFlush: "flush", BinGetQ: "getq",
	BinNoop: "noop", BinVersion: "version", BinGetK: "getk", BinGetKQ: "getkq", BinAppend: "append",
	BinPrepend: "prepend", BinStat: "stat", BinSetQ: "setq", BinAddQ: "addq", BinReplaceQ: "replaceq",
	BinDeleteQ: "deleteq", BinIncrementQ: "incrq", BinDecrementQ: "decrq", BinQuitQ: "quitq",
	BinFlushQ: "flushq", BinAppendQ: "appendq", BinPrependQ: "prependq", BinVerbosity: "verbosity",
	BinTouch: "touch", BinGAT: "gat", BinGATQ: "gatq", BinSASLList: "sasl_list_mechs",
	BinSASLAuth: "sasl_auth", BinSASLStep: "sasl_step", BinGATK: "gatk", BinGATKQ: "gatkq",
}

// String returns the opcode's name ("getkq"), or "unknown".
func (o BinOpcode) String() string {
	if int(o) < len(binOpNames) && binOpNames[o] != "" {
		return binOpNames[o]
	}
	return "unknown"
}

// Known reports whether memcached 1.6 knows the opcode.
func (o BinOpcode) Known() bool { return o.String() != "unknown" }

// Quiet reports whether the opcode is a quiet variant: no reply on a miss (get family) or on
// success (the others). Errors are always answered.
func (o BinOpcode) Quiet() bool {
	switch o {
	case BinGetQ, BinGetKQ, BinSetQ, BinAddQ, BinReplaceQ, BinDeleteQ, BinIncrementQ, BinDecrementQ,
		BinQuitQ, BinFlushQ, BinAppendQ, BinPrependQ, BinGATQ, BinGATKQ:
		return true
	}
	return false
}

// storage reports whether the opcode carries a value that may be large.
func (o BinOpcode) storage() bool {
	switch o {
	case BinSet, BinSetQ, BinAdd, BinAddQ, BinReplace, BinReplaceQ, BinAppend, BinAppendQ, BinPrepend, BinPrependQ:
		return true
	}
	return false
}

// BinStatus is a binary-protocol response status.
type BinStatus uint16

// Response statuses, memcached's values.
const (
	BinStatusOK             BinStatus = 0x0000
	BinStatusKeyNotFound    BinStatus = 0x0001
	BinStatusKeyExists      BinStatus = 0x0002
	BinStatusTooLarge       BinStatus = 0x0003
	BinStatusInvalidArgs    BinStatus = 0x0004
	BinStatusNotStored      BinStatus = 0x0005
	BinStatusAuthError      BinStatus = 0x0020
	BinStatusAuthContinue   BinStatus = 0x0021
	BinStatusUnknownCommand BinStatus = 0x0081
	BinStatusOutOfMemory    BinStatus = 0x0082
	BinStatusNotSupported   BinStatus = 0x0083
	BinStatusInternalError  BinStatus = 0x0084
)

// Error bodies, memcached's texts where it has them.
const (
	BinMsgNotFound       = "Not found"
	BinMsgTooLarge       = "Too large."
	BinMsgInvalidArgs    = "Invalid arguments"
	BinMsgNotStored      = "Not stored."
	BinMsgUnknownCommand = "Unknown command"
	BinMsgNotSupported   = "Not supported"
	BinMsgAuthFailure    = "Auth failure."
	// BinMsgAuthenticated is the body of a successful SASL AUTH.
	BinMsgAuthenticated = "Authenticated"
)

var (
	// ErrBadMagic: a request header did not start with BinaryRequestMagic. The stream cannot be
	// resynchronised; close without a reply, as memcached does.
	ErrBadMagic = errors.New("mcproto: bad binary request magic")

	// ErrBinaryInvalid: the header's lengths do not fit the opcode, or the key is not a valid key.
	// The body has been consumed, so the connection is in sync; the reply is BinStatusInvalidArgs.
	ErrBinaryInvalid = errors.New("mcproto: invalid binary request")

	// ErrBinaryBodyTooLong: a request declared a body longer than any legal one: over 1 GiB
	// (memcached's upper limit, whatever the opcode), or, for a request that carries no value, over
	// the longest extras and key. Nothing of it was read (nor allocated), so the connection is out of sync: reply
	// BinStatusInvalidArgs and close.
	ErrBinaryBodyTooLong = errors.New("mcproto: binary request body too long")
)

// BinaryRequest is one parsed binary request. The reader reuses it and its slices: all of it is
// valid only until the next call to Next.
type BinaryRequest struct {
	Opcode   BinOpcode
	DataType uint8
	VBucket  uint16
	Opaque   uint32
	Cas      uint64

	Extras []byte
	Key    []byte
	Value  []byte

	Flags   uint32 // set family: the first extras word
	Exptime int64  // set family, touch, gat family, flush: the expiration word (unsigned 32-bit on the wire)
}

// BinaryReader reads binary requests from a *bufio.Reader. The header goes into a fixed array and
// the body into one reused buffer that is never larger than maxItemSize plus the largest extras
// and key; a value over maxItemSize is skipped without being buffered.
//
// A BinaryReader is not safe for concurrent use. After an I/O error, ErrBadMagic or
// ErrBinaryBodyTooLong its position in the stream is undefined and the connection should be closed.
type BinaryReader struct {
	r           *bufio.Reader
	maxItemSize int

	hdr  [BinaryHeaderLen]byte
	body []byte
	req  BinaryRequest
	off  int64

	admit func(n int) error // see SetAdmit
}

// SetAdmit sets a function that Next calls with the value length of each request whose body it is
// about to read into memory, before reading or allocating it, when that length is not zero (values
// it swallows unread are not reported). As with Parser.SetAdmit, it may block, and its error ends
// Next as an I/O error does.
func (b *BinaryReader) SetAdmit(f func(n int) error) { b.admit = f }

// Release lets go of the last request's body and drops a body buffer that the request grew past
// its usual size, as Parser.Release does. The last request's Extras, Key and Value are nil
// afterwards; its other fields stay.
func (b *BinaryReader) Release() {
	b.req.Extras, b.req.Key, b.req.Value = nil, nil, nil
	if cap(b.body) > retainData {
		b.body = nil
	}
}

// NewBinaryReader reads requests from r; maxItemSize bounds a value (non-positive:
// DefaultMaxItemSize).
func NewBinaryReader(r *bufio.Reader, maxItemSize int) *BinaryReader {
	return &BinaryReader{r: r, maxItemSize: itemSizeLimit(maxItemSize)}
}

// Offset returns how many bytes the reader has consumed.
func (b *BinaryReader) Offset() int64 { return b.off }

// Next reads the next request.
//
// Errors: ErrTooLarge (a storage value over maxItemSize, skipped; reply BinStatusTooLarge),
// ErrBinaryInvalid (lengths that do not fit the opcode, or a bad key; body consumed; reply
// BinStatusInvalidArgs) come with the request, whose Opcode and Opaque are set, and the
// connection stays usable. ErrBinaryBodyTooLong comes with the request too, but the connection
// must be closed after the reply. ErrBadMagic and I/O errors (wrapped with %w: io.EOF between
// requests, io.ErrUnexpectedEOF inside one, the reader's own error otherwise) come without it.
func (b *BinaryReader) Next() (*BinaryRequest, error) {
	b.Release()
	b.req = BinaryRequest{}
	n, err := io.ReadFull(b.r, b.hdr[:])
	b.off += int64(n)
	if err != nil {
		return nil, fmt.Errorf("mcproto: reading binary header: %w", err)
	}
	h := b.hdr[:]
	if h[0] != BinaryRequestMagic {
		return nil, ErrBadMagic
	}
	req := &b.req
	req.Opcode = BinOpcode(h[1])
	keyLen := int(binary.BigEndian.Uint16(h[2:4]))
	extLen := int(h[4])
	req.DataType = h[5]
	req.VBucket = binary.BigEndian.Uint16(h[6:8])
	bodyLen := int64(binary.BigEndian.Uint32(h[8:12]))
	req.Opaque = binary.BigEndian.Uint32(h[12:16])
	req.Cas = binary.BigEndian.Uint64(h[16:24])

	if bodyLen > maxBinaryBody {
		return req, ErrBinaryBodyTooLong
	}
	valueLen := bodyLen - int64(keyLen) - int64(extLen)
	if valueLen < 0 || keyLen > MaxKeyLen {
		return req, b.reject(bodyLen, ErrBinaryInvalid)
	}
	if req.Opcode.storage() && valueLen > int64(b.maxItemSize) {
		// Like memcached: the value is swallowed (here unbuffered, within the caller's read
		// deadline) and the request answered as too large.
		if err := b.skip(bodyLen); err != nil {
			return nil, err
		}
		return req, ErrTooLarge
	}
	if bodyLen > int64(b.maxItemSize+maxBinaryOverhead) {
		return req, ErrBinaryBodyTooLong
	}

	if b.admit != nil && valueLen > 0 {
		if err := b.admit(int(valueLen)); err != nil {
			return nil, bodyErr(err)
		}
	}
	if int64(cap(b.body)) < bodyLen {
		b.body = make([]byte, bodyLen)
	}
	body := b.body[:bodyLen]
	n, err = io.ReadFull(b.r, body)
	b.off += int64(n)
	if err != nil {
		return nil, bodyErr(err)
	}
	req.Extras = body[:extLen:extLen]
	req.Key = body[extLen : extLen+keyLen : extLen+keyLen]
	req.Value = body[extLen+keyLen:]
	if !b.shapeOK(req) {
		return req, ErrBinaryInvalid
	}
	return req, nil
}

// reject consumes a body that cannot be served, when it is short enough to be worth reading past.
func (b *BinaryReader) reject(bodyLen int64, err error) error {
	if bodyLen > int64(b.maxItemSize+maxBinaryOverhead) {
		return ErrBinaryBodyTooLong
	}
	if serr := b.skip(bodyLen); serr != nil {
		return serr
	}
	return err
}

func (b *BinaryReader) skip(n int64) error {
	for n > 0 {
		chunk := n
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		d, err := b.r.Discard(int(chunk))
		b.off += int64(d)
		if err != nil {
			return bodyErr(err)
		}
		n -= chunk
	}
	return nil
}

func bodyErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("mcproto: reading binary body: %w", err)
}

// shapeOK checks the lengths memcached checks per opcode, decodes the extras, and checks the key.
// Opcodes mcbridge does not serve are only checked for a sane key.
func (b *BinaryReader) shapeOK(req *BinaryRequest) bool {
	ext, key, val := len(req.Extras), len(req.Key), len(req.Value)
	keyed := false // the opcode requires a key
	switch req.Opcode {
	case BinGet, BinGetQ, BinGetK, BinGetKQ, BinDelete, BinDeleteQ:
		keyed = ext == 0 && val == 0
	case BinSet, BinSetQ, BinAdd, BinAddQ, BinReplace, BinReplaceQ:
		keyed = ext == 8
		if keyed {
			req.Flags = binary.BigEndian.Uint32(req.Extras[0:4])
			req.Exptime = int64(binary.BigEndian.Uint32(req.Extras[4:8]))
		}
	case BinAppend, BinAppendQ, BinPrepend, BinPrependQ:
		keyed = ext == 0
	case BinIncrement, BinIncrementQ, BinDecrement, BinDecrementQ:
		keyed = ext == 20 && val == 0
	case BinTouch, BinGAT, BinGATQ, BinGATK, BinGATKQ:
		keyed = ext == 4 && val == 0
		if keyed {
			req.Exptime = int64(binary.BigEndian.Uint32(req.Extras))
		}
	case BinNoop, BinVersion, BinQuit, BinQuitQ:
		return ext == 0 && key == 0 && val == 0
	case BinFlush, BinFlushQ:
		if key != 0 || val != 0 || (ext != 0 && ext != 4) {
			return false
		}
		if ext == 4 {
			req.Exptime = int64(binary.BigEndian.Uint32(req.Extras))
		}
		return true
	case BinVerbosity:
		return ext == 4 && key == 0 && val == 0
	case BinStat:
		return ext == 0 && val == 0 && (key == 0 || validKey(req.Key))
	default:
		return key == 0 || validKey(req.Key)
	}
	return keyed && validKey(req.Key)
}

// BinaryResponse is what BinaryWriter.Write sends; Opaque should echo the request's.
type BinaryResponse struct {
	Opcode BinOpcode
	Status BinStatus
	Opaque uint32
	Cas    uint64
	Extras []byte
	Key    []byte
	Value  []byte
}

// BinaryWriter writes binary responses to a *bufio.Writer without allocating. The first write
// error sticks, as with Writer.
type BinaryWriter struct {
	w   *bufio.Writer
	err error
	hdr [BinaryHeaderLen]byte
	ext [4]byte
}

// NewBinaryWriter writes responses to w.
func NewBinaryWriter(w *bufio.Writer) *BinaryWriter { return &BinaryWriter{w: w} }

func (w *BinaryWriter) bytes(b []byte) {
	if w.err == nil && len(b) > 0 {
		_, w.err = w.w.Write(b)
	}
}

func (w *BinaryWriter) str(s string) {
	if w.err == nil && len(s) > 0 {
		_, w.err = w.w.WriteString(s)
	}
}

func (w *BinaryWriter) header(op BinOpcode, status BinStatus, opaque uint32, cas uint64, extLen, keyLen, bodyLen int) {
	h := w.hdr[:]
	h[0] = BinaryResponseMagic
	h[1] = byte(op)
	binary.BigEndian.PutUint16(h[2:4], uint16(keyLen))
	h[4] = byte(extLen)
	h[5] = 0
	binary.BigEndian.PutUint16(h[6:8], uint16(status))
	binary.BigEndian.PutUint32(h[8:12], uint32(bodyLen))
	binary.BigEndian.PutUint32(h[12:16], opaque)
	binary.BigEndian.PutUint64(h[16:24], cas)
	w.bytes(h)
}

// Write sends one response.
func (w *BinaryWriter) Write(r *BinaryResponse) {
	w.header(r.Opcode, r.Status, r.Opaque, r.Cas, len(r.Extras), len(r.Key), len(r.Extras)+len(r.Key)+len(r.Value))
	w.bytes(r.Extras)
	w.bytes(r.Key)
	w.bytes(r.Value)
}

// Item sends a successful get/gat/touch response: the flags as 4 bytes of extras, then the key
// (nil unless the opcode returns it) and the value (nil for touch).
func (w *BinaryWriter) Item(op BinOpcode, opaque uint32, cas uint64, flags uint32, key, value []byte) {
	binary.BigEndian.PutUint32(w.ext[:], flags)
	w.header(op, BinStatusOK, opaque, cas, 4, len(key), 4+len(key)+len(value))
	w.bytes(w.ext[:])
	w.bytes(key)
	w.bytes(value)
}

// Status sends a response with no extras or key and msg as its body: an error text, a version, or
// nothing for a plain success.
func (w *BinaryWriter) Status(op BinOpcode, status BinStatus, opaque uint32, msg string) {
	w.header(op, status, opaque, 0, 0, 0, len(msg))
	w.str(msg)
}

// KeyStatus sends a response that carries only a key: getk/gatk's miss.
func (w *BinaryWriter) KeyStatus(op BinOpcode, status BinStatus, opaque uint32, key []byte) {
	w.header(op, status, opaque, 0, 0, len(key), len(key))
	w.bytes(key)
}

// Stat sends one entry of a stat listing; an empty name and value end it.
func (w *BinaryWriter) Stat(opaque uint32, name, value []byte) {
	w.header(BinStat, BinStatusOK, opaque, 0, 0, len(name), len(name)+len(value))
	w.bytes(name)
	w.bytes(value)
}

// Flush sends what is buffered; it returns the first write error, sticky.
func (w *BinaryWriter) Flush() error {
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// Err returns the first write error, if any.
func (w *BinaryWriter) Err() error { return w.err }
