// Package mcproto reads and writes the memcached protocols: the text protocol with its meta
// commands (mg, ms, md, mn), and the binary protocol.
//
// It knows bytes and commands only: no sockets, deadlines or queue semantics. A Parser turns the
// bytes of a *bufio.Reader into Commands, a Writer turns replies into bytes on a *bufio.Writer,
// BinaryReader and BinaryWriter do the same for binary frames, and SplitKey reads the kestrel
// options (/open, /close, /abort, /peek, /t=<ms>) off a key.
//
// Limits: a command line may hold MaxLineLen bytes before its LF or CR LF, a get-family line
// MaxRetrievalLineLen; a data block at most the parser's maxItemSize. Nothing is buffered past a
// limit, and a declared size over maxItemSize is skipped without allocating for it.
//
// Error replies use memcached's specific spellings where it has them: "invalid numeric delta
// argument" (incr/decr), "invalid exptime argument" (touch, gat/gats, flush_all delay) and
// "bad command line format.  Usage: delete <key> [noreply]" (delete with a time other than 0).
//
// Framing and error replies follow Debian's memcached 1.6 (checked against it), with these
// deliberate differences, all of which keep a connection in sync where memcached would not or make
// a malformed line an error instead of guessing:
//
//   - A storage line whose byte count is readable but which is otherwise malformed (bad key, bad
//     flags, bad noreply token) has its data block swallowed before the CLIENT_ERROR is reported.
//     memcached replies first and then parses the data block as commands (an extra ERROR).
//   - Wrong argument counts are "CLIENT_ERROR bad command line format" (memcached: ERROR), and a
//     trailing token that should be "noreply" but is not is an error (memcached ignores it).
//   - Numbers are plain decimal digits (memcached's strtol also takes "+5"), flags must fit 32 bits
//     (memcached 1.6.18 silently accepts 4294967296), and gat/gats need at least one key.
//   - Keys may not hold control characters (memcached splits on spaces only and takes "a\tb").
package mcproto
