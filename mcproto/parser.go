package mcproto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
)

const (
	// MaxKeyLen is memcached's KEY_MAX_LENGTH.
	MaxKeyLen = 250

	// MaxLineLen bounds a command line, its CR LF or LF not counted.
	MaxLineLen = 2048

	// MaxRetrievalLineLen bounds a get/gets/gat/gats line: multi-gets carry many keys, and memcached
	// lets them grow past MaxLineLen.
	MaxRetrievalLineLen = 64 << 10

	// DefaultMaxItemSize is memcached's default item size limit (-I 1m), used when NewParser is
	// given a non-positive size.
	DefaultMaxItemSize = 1 << 20

	// maxDataLen is the largest byte count that is a number at all: memcached refuses counts above
	// INT_MAX-2 as a malformed line rather than as too large.
	maxDataLen = math.MaxInt32 - 2

	// Buffers above these sizes are dropped once their command is done. 5,000 idle connections
	// must fit in 128 MiB (about 26 KiB each, bufio buffers and goroutine stack included), so a
	// connection keeps only what ordinary commands need: a normal line and a small value.
	retainLine   = MaxLineLen + 2
	retainData   = 8 << 10
	retainTokens = 64

	// MaxSharedBlock is the longest data block (text) or value (binary) that a reader may read into
	// a buffer it reuses for later commands. A longer one is read into a buffer that the reader
	// drops, never to write it again, once the command is released (Release, or the next Next):
	// the caller may keep such a block instead of copying it.
	MaxSharedBlock = retainData

	initialLine   = 256
	initialTokens = 8
)

// noreply is the optional last token of commands whose reply the client does not want.
const noreply = "noreply"

// Command is one parsed request. The parser reuses it and every slice in it: all of it is valid
// only until the next call to Next.
type Command struct {
	Op      Op
	Keys    [][]byte // get/gets/gat/gats: every key (at least one); set/cas/add/.../delete/touch/incr/decr: Keys[0]
	Flags   uint32   // storage commands (memcached flags are 32-bit unsigned)
	Exptime int64    // storage commands, touch, gat/gats (the exptime argument)
	Cas     uint64   // cas
	Delta   uint64   // incr/decr
	Noreply bool
	Data    []byte    // the data block of set/cas/add/replace/append/prepend, without its trailing \r\n
	Args    [][]byte  // stats: its arguments ("queue", "settings"); verbosity: the level; flush_all: the optional delay
	Meta    MetaFlags // mg, ms, md: the flags (Keys[0] is the key, decoded when base64; Flags, Exptime, Cas hold F, T, C)
}

// Parser reads commands from a *bufio.Reader. It is a single pass over the bytes of each line
// with no per-command allocation in steady state: the line is copied into a parser-owned buffer
// (so nothing the caller does with the reader can clobber a Command), tokens are sub-slices of
// it, and data blocks land in a reused buffer.
//
// A Parser is not safe for concurrent use. After an I/O error or ErrLineTooLong its position in
// the stream is undefined and the connection should be closed.
type Parser struct {
	r           *bufio.Reader
	maxItemSize int

	cmd  Command
	line []byte          // the current line, terminator included while it is being assembled
	toks [][]byte        // tokens of the current line, sub-slices of line
	data []byte          // data block plus its CR LF
	off  int64           // bytes consumed from r, for error snippets
	last []byte          // the current line without its terminator, for Line
	key  [MaxKeyLen]byte // a meta command's base64 key, decoded

	admit func(n int) error // see SetAdmit; nil: every block is read at once
}

// SetAdmit sets a function that Next calls with the size of each data block it is about to read
// into memory, before reading or allocating any of it (blocks it swallows unread, being too large or
// on a bad line, are not reported). The function may block: the block then waits in the
// connection (back-pressure). An error from it ends Next as an I/O error does, wrapped with %w, and
// the position in the stream is then undefined.
func (p *Parser) SetAdmit(f func(n int) error) { p.admit = f }

// Release lets go of the last command's data block and drops the buffers that the command grew
// past their usual size (a large value), so that a connection waiting for its next command holds
// no more than an idle one. The last Command's Data is nil afterwards; its other fields stay.
func (p *Parser) Release() {
	p.cmd.Data = nil
	p.release()
}

// NewParser reads commands from r. maxItemSize bounds a data block (limits.max_item_size); a
// non-positive value means DefaultMaxItemSize. The caller's reader may be small (4 KiB): longer
// lines are assembled in a buffer that grows only up to the line limit.
func NewParser(r *bufio.Reader, maxItemSize int) *Parser {
	return &Parser{r: r, maxItemSize: itemSizeLimit(maxItemSize)}
}

// itemSizeLimit is the value size a reader enforces for the configured
// maxItemSize: DefaultMaxItemSize when not positive, never above
// maxDataLen.
func itemSizeLimit(maxItemSize int) int {
	if maxItemSize <= 0 {
		return DefaultMaxItemSize
	}
	return min(maxItemSize, maxDataLen)
}

// Line returns the last command line read, without its terminator, for logging (see Snippet);
// after ErrLineTooLong, the part of it that was read. It is valid until the next call to Next.
func (p *Parser) Line() []byte { return p.last }

// Offset returns how many bytes the parser has consumed from its reader, so that a logged bad
// line can be placed in the stream.
func (p *Parser) Offset() int64 { return p.off }

// Next reads and parses the next command.
//
// Errors tell the caller which reply to write: *ClientError (CLIENT_ERROR, connection usable),
// ErrTooLarge (SERVER_ERROR object too large for cache, connection usable), ErrUnknownCommand
// (ERROR, connection usable), ErrLineTooLong (CLIENT_ERROR line too long, then close), or an I/O
// error wrapped with %w: io.EOF when the client closed between commands, io.ErrUnexpectedEOF when
// it closed in the middle of one, the reader's own error (a net timeout) otherwise.
//
// With a *ClientError or ErrTooLarge, Next also returns the Command with Op and Noreply set (and
// the other fields that were read), so the caller can count the command and honour noreply as it
// chooses; with every other error the Command is nil.
func (p *Parser) Next() (*Command, error) {
	p.release()
	p.cmd = Command{}
	p.last = nil

	line, err := p.readLine()
	if err != nil {
		if err == ErrLineTooLong {
			p.last = p.line // the bounded part that was read, for the log
		}
		return nil, err
	}
	p.last = line
	p.tokenize(line)
	if len(p.toks) == 0 {
		return nil, ErrUnknownCommand
	}
	op := lookupOp(p.toks[0])
	if op == OpUnknown {
		return nil, ErrUnknownCommand
	}
	p.cmd.Op = op
	args := p.toks[1:]

	switch op {
	case OpGet, OpGets:
		err = p.parseRetrieval(args)
	case OpGat, OpGats:
		err = p.parseGat(args)
	case OpSet, OpCas, OpAdd, OpReplace, OpAppend, OpPrepend:
		err = p.parseStorage(args)
	case OpIncr, OpDecr:
		err = p.parseArithmetic(args)
	case OpDelete:
		err = p.parseDelete(args)
	case OpTouch:
		err = p.parseTouch(args)
	case OpStats:
		p.cmd.Args = args
	case OpVersion:
		if len(args) != 0 {
			err = errBadFormat
		}
	case OpQuit:
		// memcached quits whatever follows the word (proto_text.c's
		// process_quit_command looks at no token): a client that says
		// quit means to go, and answering it instead would leave it
		// waiting on an open connection.
	case OpVerbosity:
		err = p.parseVerbosity(args)
	case OpFlushAll:
		err = p.parseFlushAll(args)
	case OpMetaGet, OpMetaDelete:
		err = p.parseMeta(args)
	case OpMetaSet:
		err = p.parseMetaSet(args)
	case OpMetaNoop:
		// memcached ignores anything after mn.
	}
	if err != nil {
		// The parse functions return these unwrapped; I/O errors come back without the Command.
		if _, ok := err.(*ClientError); ok || err == ErrTooLarge {
			return &p.cmd, err
		}
		return nil, err
	}
	return &p.cmd, nil
}

// release drops buffers that one unusual command grew, so an idle connection stays small.
func (p *Parser) release() {
	if cap(p.line) > retainLine {
		p.line = nil
	}
	if cap(p.data) > retainData {
		p.data = nil
	}
	if cap(p.toks) > retainTokens {
		p.toks = nil
	}
}

// readLine returns the next line without its LF or CR LF. It reads only what is already buffered
// (or one fill when nothing is), so a client that stops mid-line past the limit gets its error
// without the parser waiting for more, and it never holds more than limit+2 bytes.
func (p *Parser) readLine() ([]byte, error) {
	p.line = p.line[:0]
	limit := MaxLineLen
	for {
		buf, err := p.buffered()
		if err != nil {
			if errors.Is(err, io.EOF) && len(p.line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("mcproto: reading command line: %w", err)
		}
		chunk := buf
		nl := bytes.IndexByte(buf, '\n')
		if nl >= 0 {
			chunk = buf[:nl+1]
		}
		if room := limit + 2 - len(p.line); len(chunk) > room {
			chunk, nl = chunk[:room], -1
		}
		p.line = appendBounded(p.line, chunk, limit+2)
		p.discard(len(chunk))

		if nl >= 0 {
			line := p.line[:len(p.line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > limit {
				if limit != MaxLineLen || !isRetrievalLine(line) {
					return nil, ErrLineTooLong
				}
				// A retrieval line of MaxLineLen+1 bytes: well within the larger limit.
			}
			return line, nil
		}
		// No newline yet. Past limit+1 bytes the content is too long whatever follows; at limit+1
		// it still fits if that byte is the CR of a CR LF.
		if n := len(p.line); n >= limit+2 || (n == limit+1 && p.line[limit] != '\r') {
			if limit != MaxLineLen || !isRetrievalLine(p.line) {
				return nil, ErrLineTooLong
			}
			limit = MaxRetrievalLineLen
		}
	}
}

// buffered returns what the reader holds, filling it first if it is empty.
func (p *Parser) buffered() ([]byte, error) {
	if p.r.Buffered() == 0 {
		if _, err := p.r.Peek(1); err != nil {
			return nil, err
		}
	}
	return p.r.Peek(p.r.Buffered())
}

// discard drops n bytes that buffered already returned; it cannot fail.
func (p *Parser) discard(n int) {
	p.r.Discard(n) //nolint:errcheck // the bytes are in the buffer
	p.off += int64(n)
}

// appendBounded appends b to dst, growing dst geometrically but never past max bytes of capacity.
func appendBounded(dst, b []byte, max int) []byte {
	need := len(dst) + len(b)
	if need > cap(dst) {
		c := 2 * cap(dst)
		if c < initialLine {
			c = initialLine
		}
		if c < need {
			c = need
		}
		if c > max {
			c = max
		}
		n := make([]byte, len(dst), c)
		copy(n, dst)
		dst = n
	}
	return append(dst, b...)
}

// isRetrievalLine reports whether line starts with a get-family command word, the only lines
// allowed past MaxLineLen.
func isRetrievalLine(line []byte) bool {
	for len(line) > 0 && line[0] == ' ' {
		line = line[1:]
	}
	return bytes.HasPrefix(line, []byte("get ")) || bytes.HasPrefix(line, []byte("gets ")) ||
		bytes.HasPrefix(line, []byte("gat ")) || bytes.HasPrefix(line, []byte("gats "))
}

// tokenize splits line on runs of spaces, as memcached's tokenize_command does (tabs and other
// bytes are part of a token).
func (p *Parser) tokenize(line []byte) {
	if p.toks == nil {
		p.toks = make([][]byte, 0, initialTokens)
	}
	toks := p.toks[:0]
	for i := 0; i < len(line); {
		if line[i] == ' ' {
			i++
			continue
		}
		j := i + 1
		for j < len(line) && line[j] != ' ' {
			j++
		}
		toks = append(toks, line[i:j:j])
		i = j
	}
	p.toks = toks
}

// trimNoreply sets Noreply and drops the last argument when it is "noreply". Commands that allow
// it call this before counting their arguments.
func (p *Parser) trimNoreply(args [][]byte) [][]byte {
	if n := len(args); n > 0 && string(args[n-1]) == noreply {
		p.cmd.Noreply = true
		return args[:n-1]
	}
	return args
}

func (p *Parser) parseRetrieval(keys [][]byte) error {
	if len(keys) == 0 {
		return errBadFormat
	}
	p.cmd.Keys = keys
	for _, k := range keys {
		if !validKey(k) {
			return errBadFormat
		}
	}
	return nil
}

func (p *Parser) parseGat(args [][]byte) error {
	if len(args) < 2 {
		return errBadFormat
	}
	exptime, ok := parseInt(args[0])
	if !ok {
		return errBadExptime
	}
	p.cmd.Exptime = exptime
	return p.parseRetrieval(args[1:])
}

// parseStorage parses "<cmd> <key> <flags> <exptime> <bytes> [<cas>] [noreply]" and reads the data
// block.
//
// Design choice: once the byte count is known, the data block is always consumed, even when
// another part of the line is wrong (a key that is too long or holds a control character, bad
// flags, a bad noreply token). The client has sent that block anyway; swallowing it keeps the
// connection in sync, where memcached would parse the value as a command and answer an extra
// ERROR. When the byte count itself is missing, unparseable or negative, the block's size is
// unknowable, and the line is refused without swallowing anything, as memcached does.
func (p *Parser) parseStorage(args [][]byte) error {
	c := &p.cmd
	want := 4 // key flags exptime bytes
	if c.Op == OpCas {
		want = 5
	}
	c.Noreply = len(args) > 0 && string(args[len(args)-1]) == noreply
	if len(args) < want || len(args) > want+1 {
		return errBadFormat
	}
	size, ok := parseUint(args[3], maxDataLen)
	if !ok {
		return errBadFormat
	}
	n := int(size)
	c.Keys = args[:1]

	valid := validKey(args[0])
	flags, ok := parseUint(args[1], math.MaxUint32)
	valid = valid && ok
	c.Flags = uint32(flags)
	c.Exptime, ok = parseInt(args[2])
	valid = valid && ok
	if c.Op == OpCas {
		c.Cas, ok = parseUint(args[4], math.MaxUint64)
		valid = valid && ok
	}
	if len(args) == want+1 && !c.Noreply {
		valid = false // the byte count is still where it belongs, so the block is swallowed
	}

	var bad error
	if !valid {
		bad = errBadFormat
	}
	return p.readBlock(n, bad)
}

// readBlock reads a data block of n bytes and its CR LF into Command.Data. When bad is not nil,
// or n is over the item size limit, the block is swallowed unread, without allocating for it,
// and bad (or ErrTooLarge) is returned.
func (p *Parser) readBlock(n int, bad error) error {
	c := &p.cmd
	if bad != nil || n > p.maxItemSize {
		if err := p.skip(n + 2); err != nil {
			return err
		}
		if bad != nil {
			return bad
		}
		return ErrTooLarge
	}

	if p.admit != nil {
		if err := p.admit(n); err != nil {
			return dataErr(err)
		}
	}
	if cap(p.data) < n+2 {
		p.data = make([]byte, n+2)
	}
	buf := p.data[:n+2]
	read, err := io.ReadFull(p.r, buf)
	p.off += int64(read)
	if err != nil {
		return dataErr(err)
	}
	// Like memcached: read exactly <bytes>+2, then check; a wrong ending is not searched for.
	if buf[n] != '\r' || buf[n+1] != '\n' {
		return errBadDataChunk
	}
	c.Data = buf[:n:n]
	return nil
}

// skip discards n bytes of the stream through the reader's own buffer.
func (p *Parser) skip(n int) error {
	d, err := p.r.Discard(n)
	p.off += int64(d)
	if err != nil {
		return dataErr(err)
	}
	return nil
}

// dataErr wraps an error met inside a data block: the command was started, so a clean EOF is
// still unexpected.
func dataErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("mcproto: reading data block: %w", err)
}

func (p *Parser) parseArithmetic(args [][]byte) error {
	args = p.trimNoreply(args)
	if len(args) != 2 {
		return errBadFormat
	}
	p.cmd.Keys = args[:1]
	if !validKey(args[0]) {
		return errBadFormat
	}
	delta, ok := parseUint(args[1], math.MaxUint64)
	if !ok {
		return errBadDelta
	}
	p.cmd.Delta = delta
	return nil
}

// parseDelete accepts "delete <key> [0] [noreply]": a hold time of 0 is what old clients send, any
// other is memcached's usage error.
func (p *Parser) parseDelete(args [][]byte) error {
	if len(args) == 0 || len(args) > 3 {
		return errBadFormat
	}
	p.cmd.Keys = args[:1]
	rest := p.trimNoreply(args[1:])
	if len(rest) > 1 || (len(rest) == 1 && string(rest[0]) != "0") {
		return errDeleteUsage
	}
	if !validKey(args[0]) {
		return errBadFormat
	}
	return nil
}

func (p *Parser) parseTouch(args [][]byte) error {
	args = p.trimNoreply(args)
	if len(args) != 2 {
		return errBadFormat
	}
	p.cmd.Keys = args[:1]
	if !validKey(args[0]) {
		return errBadFormat
	}
	exptime, ok := parseInt(args[1])
	if !ok {
		return errBadExptime
	}
	p.cmd.Exptime = exptime
	return nil
}

func (p *Parser) parseVerbosity(args [][]byte) error {
	if len(args) == 2 {
		args = p.trimNoreply(args)
	}
	if len(args) != 1 {
		return errBadFormat
	}
	if _, ok := parseUint(args[0], math.MaxUint32); !ok {
		return errBadFormat
	}
	p.cmd.Args = args
	return nil
}

func (p *Parser) parseFlushAll(args [][]byte) error {
	args = p.trimNoreply(args)
	if len(args) > 1 {
		return errBadFormat
	}
	if len(args) == 1 {
		if _, ok := parseInt(args[0]); !ok {
			return errBadExptime // memcached 1.6's spelling for a bad delay
		}
	}
	p.cmd.Args = args
	return nil
}

// parseUint parses plain decimal digits up to max.
func parseUint(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// parseInt parses an optionally negative decimal int64.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if !neg {
		n, ok := parseUint(b, math.MaxInt64)
		return int64(n), ok
	}
	n, ok := parseUint(b, math.MaxInt64+1)
	return -int64(n), ok
}
