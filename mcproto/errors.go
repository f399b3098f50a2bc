package mcproto

import (
	"errors"
	"strconv"
)

// Reply texts that go after "CLIENT_ERROR " or "SERVER_ERROR ", in memcached's spelling where
// memcached has one.
const (
	MsgBadFormat      = "bad command line format"
	MsgBadDataChunk   = "bad data chunk"
	MsgDeleteUsage    = "bad command line format.  Usage: delete <key> [noreply]" // two spaces, as memcached 1.6 writes it
	MsgBadDelta       = "invalid numeric delta argument"
	MsgBadExptime     = "invalid exptime argument"
	MsgLineTooLong    = "line too long" // mcbridge's own: memcached just closes the connection
	MsgObjectTooLarge = "object too large for cache"
)

// ClientError is a request the client got wrong; the reply is "CLIENT_ERROR <Msg>" and the
// connection stays usable.
type ClientError struct {
	Msg string
}

// Error returns the reply line without its CR LF.
func (e *ClientError) Error() string { return "CLIENT_ERROR " + e.Msg }

// The parser returns these shared values so that an error costs no allocation; callers must not
// modify them.
var (
	errBadFormat    = &ClientError{Msg: MsgBadFormat}
	errBadDataChunk = &ClientError{Msg: MsgBadDataChunk}
	errDeleteUsage  = &ClientError{Msg: MsgDeleteUsage}
	errBadDelta     = &ClientError{Msg: MsgBadDelta}
	errBadExptime   = &ClientError{Msg: MsgBadExptime}
)

var (
	// ErrTooLarge means a storage command declared more bytes than the parser's maxItemSize. The
	// data block has already been read and discarded, so the connection is in sync; the reply is
	// "SERVER_ERROR object too large for cache".
	ErrTooLarge = errors.New("mcproto: object too large for cache")

	// ErrLineTooLong means a command line went past its limit without a newline. The parser stopped
	// reading in the middle of it, so the connection is out of sync: reply
	// "CLIENT_ERROR line too long" and close.
	ErrLineTooLong = errors.New("mcproto: line too long")

	// ErrUnknownCommand means an unknown command word or an empty line; the reply is "ERROR" and
	// the connection stays usable.
	ErrUnknownCommand = errors.New("mcproto: unknown command")
)

// Snippet quotes at most 64 bytes of b for a log line, so that bad input from a client can be
// logged without flooding the log.
func Snippet(b []byte) string {
	const max = 64
	if len(b) <= max {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:max])) + "..."
}
