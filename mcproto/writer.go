package mcproto

import (
	"bufio"
	"errors"
	"strconv"
)

// Reply words, spelled as memcached spells them.
const (
	crlf            = "\r\n"
	resultValue     = "VALUE "
	resultEnd       = "END\r\n"
	resultStored    = "STORED\r\n"
	resultNotStored = "NOT_STORED\r\n"
	resultExists    = "EXISTS\r\n"
	resultNotFound  = "NOT_FOUND\r\n"
	resultDeleted   = "DELETED\r\n"
	resultTouched   = "TOUCHED\r\n"
	resultOK        = "OK\r\n"
	resultError     = "ERROR\r\n"
	resultClientErr = "CLIENT_ERROR "
	resultServerErr = "SERVER_ERROR "
	resultVersion   = "VERSION "
	resultStat      = "STAT "
)

// Writer writes replies to a *bufio.Writer without allocating: numbers are formatted into a
// scratch array. The first write error sticks; later writes are dropped and Flush and Err return
// it, so a handler can write a whole reply and check once.
type Writer struct {
	w   *bufio.Writer
	err error
	num [24]byte
}

// NewWriter writes replies to w.
func NewWriter(w *bufio.Writer) *Writer {
	return &Writer{w: w}
}

func (w *Writer) str(s string) {
	if w.err == nil {
		_, w.err = w.w.WriteString(s)
	}
}

func (w *Writer) bytes(b []byte) {
	if w.err == nil {
		_, w.err = w.w.Write(b)
	}
}

func (w *Writer) uint(v uint64) {
	w.bytes(strconv.AppendUint(w.num[:0], v, 10))
}

func (w *Writer) int(v int64) {
	w.bytes(strconv.AppendInt(w.num[:0], v, 10))
}

// Value writes one hit of a get: "VALUE <key> <flags> <bytes>\r\n<data>\r\n". key is echoed as the
// client sent it, options included, because clients look hits up by the key they asked for.
func (w *Writer) Value(key []byte, flags uint32, data []byte) {
	w.valueHeader(key, flags, data)
	w.str(crlf)
	w.bytes(data)
	w.str(crlf)
}

// ValueCas writes one hit of a gets: "VALUE <key> <flags> <bytes> <cas>\r\n<data>\r\n".
func (w *Writer) ValueCas(key []byte, flags uint32, data []byte, cas uint64) {
	w.valueHeader(key, flags, data)
	w.str(" ")
	w.uint(cas)
	w.str(crlf)
	w.bytes(data)
	w.str(crlf)
}

func (w *Writer) valueHeader(key []byte, flags uint32, data []byte) {
	w.str(resultValue)
	w.bytes(key)
	w.str(" ")
	w.uint(uint64(flags))
	w.str(" ")
	w.uint(uint64(len(data)))
}

// End ends a retrieval reply or a stats listing.
func (w *Writer) End() { w.str(resultEnd) }

// Stored writes STORED.
func (w *Writer) Stored() { w.str(resultStored) }

// NotStored writes NOT_STORED.
func (w *Writer) NotStored() { w.str(resultNotStored) }

// Exists writes EXISTS.
func (w *Writer) Exists() { w.str(resultExists) }

// NotFound writes NOT_FOUND.
func (w *Writer) NotFound() { w.str(resultNotFound) }

// Deleted writes DELETED.
func (w *Writer) Deleted() { w.str(resultDeleted) }

// Touched writes TOUCHED.
func (w *Writer) Touched() { w.str(resultTouched) }

// OK writes OK.
func (w *Writer) OK() { w.str(resultOK) }

// Error writes ERROR, memcached's reply to an unknown command.
func (w *Writer) Error() { w.str(resultError) }

// ClientError writes "CLIENT_ERROR <msg>".
func (w *Writer) ClientError(msg string) {
	w.str(resultClientErr)
	w.str(msg)
	w.str(crlf)
}

// ServerError writes "SERVER_ERROR <msg>".
func (w *Writer) ServerError(msg string) {
	w.str(resultServerErr)
	w.str(msg)
	w.str(crlf)
}

// ErrorReply writes the reply memcached gives for an error from Parser.Next and reports whether
// err was one of those; I/O errors have no reply (the caller closes the connection).
func (w *Writer) ErrorReply(err error) bool {
	var ce *ClientError
	switch {
	case errors.As(err, &ce):
		w.ClientError(ce.Msg)
	case errors.Is(err, ErrTooLarge):
		w.ServerError(MsgObjectTooLarge)
	case errors.Is(err, ErrLineTooLong):
		w.ClientError(MsgLineTooLong)
	case errors.Is(err, ErrUnknownCommand):
		w.Error()
	default:
		return false
	}
	return true
}

// Version writes "VERSION <v>".
func (w *Writer) Version(v string) {
	w.str(resultVersion)
	w.str(v)
	w.str(crlf)
}

// Stat writes "STAT <name> <value>".
func (w *Writer) Stat(name string, value []byte) {
	w.str(resultStat)
	w.str(name)
	w.str(" ")
	w.bytes(value)
	w.str(crlf)
}

// StatInt writes a signed STAT line.
func (w *Writer) StatInt(name string, v int64) {
	w.str(resultStat)
	w.str(name)
	w.str(" ")
	w.int(v)
	w.str(crlf)
}

// StatUint writes an unsigned STAT line (counters).
func (w *Writer) StatUint(name string, v uint64) {
	w.str(resultStat)
	w.str(name)
	w.str(" ")
	w.uint(v)
	w.str(crlf)
}

// StatString writes a STAT line with a text value.
func (w *Writer) StatString(name, v string) {
	w.str(resultStat)
	w.str(name)
	w.str(" ")
	w.str(v)
	w.str(crlf)
}

// Raw writes b as it is, for replies this package has no word for.
func (w *Writer) Raw(b []byte) { w.bytes(b) }

// Flush sends what is buffered; it returns the first write error, sticky.
func (w *Writer) Flush() error {
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// Err returns the first write error, if any.
func (w *Writer) Err() error { return w.err }
