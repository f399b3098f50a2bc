package faults

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/mcbridge/mcbridge/internal/mctest"
)

// The socket fuzz test's inputs: valid commands of every framing, the
// same with their bytes broken, and plain noise. Each generator draws
// from its connection's own seeded source, so that a seed replays the
// same bytes.

// fuzzGen makes the requests of one fuzz connection.
type fuzzGen struct {
	rng  *rand.Rand
	keys []string // queue names the fuzz may use: all under the test's prefix
	// idle is a queue nobody sets to: a wait on it waits.
	idle string
	// counts says how many requests of each kind were made, for the
	// test's summary.
	counts map[string]int
}

func (g *fuzzGen) pick(s []string) string { return s[g.rng.IntN(len(s))] }

func (g *fuzzGen) count(kind string) { g.counts[kind]++ }

// number is a decimal argument: usually an ordinary one, sometimes one at
// or past the edge of what the field holds.
func (g *fuzzGen) number() string {
	if g.rng.IntN(8) > 0 {
		return strconv.Itoa(g.rng.IntN(100))
	}
	return g.pick(edgeNumbers)
}

var edgeNumbers = []string{
	"-1", "0", "-0", "+1", "2592000", "2592001", "4294967295", "4294967296", "9223372036854775807",
	"9223372036854775808", "18446744073709551615", "18446744073709551616",
	"99999999999999999999999", "-9223372036854775808", "1e3", "0x10", "", " ",
}

// key is a key for a command: a queue of the pool, often with kestrel
// options (valid or not), sometimes a key that mcbridge must refuse.
func (g *fuzzGen) key() string {
	k := g.pick(g.keys)
	switch g.rng.IntN(24) {
	case 0:
		k += "/open"
	case 1:
		k += "/close"
	case 2:
		k += "/close/open"
	case 3:
		k += "/abort"
	case 4:
		k += "/peek"
	case 5:
		k += "/t=" + strconv.Itoa(g.rng.IntN(300))
	case 6:
		// A long wait: the connection's end (or the test's) must end it.
		k += "/close/open/t=" + g.pick([]string{"5000", "60000", "86400000", "86400001"})
	case 7:
		k += g.pick([]string{"/", "//", "/peek/open", "/abort/open", "/t=", "/t=-1", "/bogus", "/OPEN", "/t=1/t=2"})
	case 8:
		k = g.pick([]string{"amq." + k, "caf\xe9", "\xff\xfe", strings.Repeat("k", 251), strings.Repeat("k", 250), "a\x7fb", "a\tb", "/open"})
	}
	return k
}

// keys is one to a few keys, for get-family lines.
func (g *fuzzGen) keyList() string {
	n := 1 + g.rng.IntN(3)
	if g.rng.IntN(40) == 0 {
		n = 200 + g.rng.IntN(400) // a long multi-get line
	}
	ks := make([]string, n)
	for i := range ks {
		ks[i] = g.key()
	}
	return strings.Join(ks, " ")
}

// value is a data block's content: usually short, sometimes with CR LF
// or binary inside, rarely over max_item_size.
func (g *fuzzGen) value() string {
	switch g.rng.IntN(40) {
	case 0:
		if g.rng.IntN(10) == 0 {
			return strings.Repeat("v", 1<<20+1+g.rng.IntN(1000)) // over the 1 MiB max_item_size
		}
		return strings.Repeat("v", 4096+g.rng.IntN(8192)) // more than a read buffer
	case 1, 2:
		return "line1\r\nline2\r\nEND\r\n"
	case 3:
		return string(g.noise(64))
	}
	return fmt.Sprintf("fz%d", g.rng.IntN(1_000_000))
}

// textCommand is one text-protocol command, meta commands included, as a
// client would send it, data block and all.
func (g *fuzzGen) textCommand() string {
	nr := func() string {
		if g.rng.IntN(5) == 0 {
			return " noreply"
		}
		return ""
	}
	storage := func(cmd string, extra string) string {
		v := g.value()
		n := strconv.Itoa(len(v))
		switch g.rng.IntN(12) {
		case 0:
			n = strconv.Itoa(max(0, len(v)-1-g.rng.IntN(3))) // a data block longer than said
		case 1:
			n = strconv.Itoa(len(v) + 1 + g.rng.IntN(3)) // shorter: the next line is eaten
		case 2:
			n = g.pick(edgeNumbers)
		}
		return fmt.Sprintf("%s %s %s %s %s%s%s\r\n%s\r\n", cmd, g.key(), g.number(), g.number(), n, extra, nr(), v)
	}
	switch r := g.rng.IntN(100); {
	case r < 14:
		g.count("text get")
		return g.pick([]string{"get", "gets"}) + " " + g.keyList() + "\r\n"
	case r < 20:
		g.count("text gat")
		return g.pick([]string{"gat", "gats"}) + " " + g.number() + " " + g.keyList() + "\r\n"
	case r < 32:
		g.count("text set")
		return storage("set", "")
	case r < 35:
		g.count("text cas")
		return storage("cas", " "+g.pick([]string{strconv.FormatUint(g.rng.Uint64(), 10), "1", "0", g.number()}))
	case r < 39:
		g.count("text add/replace/append/prepend")
		return storage(g.pick([]string{"add", "replace", "append", "prepend"}), "")
	case r < 47:
		g.count("text delete")
		return "delete " + g.key() + g.pick([]string{"", " 0", " 10", ""}) + nr() + "\r\n"
	case r < 51:
		g.count("text touch")
		return "touch " + g.key() + " " + g.number() + nr() + "\r\n"
	case r < 53:
		g.count("text incr/decr")
		return g.pick([]string{"incr", "decr"}) + " " + g.key() + " " + g.number() + nr() + "\r\n"
	case r < 55:
		g.count("text stats")
		return "stats" + g.pick([]string{"", " queue", " settings", " items", " slabs", " sizes", " conns", " detail on", " reset", " bogus"}) + "\r\n"
	case r < 58:
		g.count("text other")
		return g.pick([]string{"version\r\n", "verbosity 1\r\n", "verbosity 1 noreply\r\n", "verbosity\r\n",
			"flush_all\r\n", "flush_all 0\r\n", "flush_all 10 noreply\r\n", "flush_all noreply\r\n",
			"quit extra\r\n", "\r\n", "hello\r\n", "GET " + g.key() + "\r\n", "shutdown\r\n", "cache_memlimit 10\r\n",
			"lru_crawler metadump all\r\n", "watch\r\n", "me " + g.key() + "\r\n", "ma " + g.key() + "\r\n"})
	case r < 59:
		g.count("text quit")
		return "quit\r\n"
	}
	return g.metaCommand()
}

// metaFlag is one meta flag token, with a value where it takes one.
func (g *fuzzGen) metaFlag() string {
	switch g.rng.IntN(8) {
	case 0:
		return "T" + g.number()
	case 1:
		return "F" + g.number()
	case 2:
		return "C" + g.pick([]string{strconv.FormatUint(g.rng.Uint64(), 10), g.number()})
	case 3:
		return "O" + g.pick([]string{"op", "1", strings.Repeat("o", 40), ""})
	case 4:
		return "M" + g.pick([]string{"S", "E", "A", "P", "R", "s", "X", "", "SS"})
	case 5:
		return "N" + g.number()
	}
	return g.pick([]string{"v", "f", "k", "c", "s", "t", "q", "b", "h", "l", "u", "I", "E1", "R30", "x", "!"})
}

func (g *fuzzGen) metaFlags() string {
	n := g.rng.IntN(6)
	var b strings.Builder
	for range n {
		b.WriteString(" " + g.metaFlag())
	}
	return b.String()
}

// metaKey is a key for a meta command, base64 now and then (with b).
func (g *fuzzGen) metaKey() string {
	k := g.key()
	if g.rng.IntN(10) == 0 {
		return base64.StdEncoding.EncodeToString([]byte(k)) + " b"
	}
	return k
}

func (g *fuzzGen) metaCommand() string {
	switch r := g.rng.IntN(100); {
	case r < 35:
		g.count("meta mg")
		return "mg " + g.metaKey() + g.metaFlags() + "\r\n"
	case r < 60:
		g.count("meta ms")
		v := g.value()
		n := strconv.Itoa(len(v))
		if g.rng.IntN(10) == 0 {
			n = g.pick(edgeNumbers)
		}
		return "ms " + g.metaKey() + " " + n + g.metaFlags() + "\r\n" + v + "\r\n"
	case r < 80:
		g.count("meta md")
		return "md " + g.metaKey() + g.metaFlags() + "\r\n"
	case r < 90:
		g.count("meta mn")
		return "mn\r\n"
	}
	g.count("meta me/ma")
	return g.pick([]string{"me ", "ma "}) + g.metaKey() + g.metaFlags() + "\r\n"
}

// binOpcodes are every opcode memcached knows, and a few it does not.
var binOpcodes = []byte{
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
	0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x20,
	0x21, 0x22, 0x23, 0x24, 0x25, 0x30, 0x3d, 0x83, 0xff,
}

// binaryRequest is one binary-protocol request. Most have the extras
// their opcode wants; some do not.
func (g *fuzzGen) binaryRequest() string {
	op := binOpcodes[g.rng.IntN(len(binOpcodes))]
	// Weight the operations that do something on a queue.
	switch g.rng.IntN(6) {
	case 0:
		op = g.pick2(0x00, 0x09, 0x0c, 0x0d) // get family
	case 1:
		op = g.pick2(0x01, 0x11) // set, setq
	case 2:
		op = g.pick2(0x04, 0x14, 0x1c, 0x1d) // delete, deleteq, touch, gat
	}
	g.count(fmt.Sprintf("binary op %#02x", op))
	var extras, key, value string
	key = g.key()
	cas := uint64(0)
	switch op {
	case 0x01, 0x11, 0x02, 0x12, 0x03, 0x13: // set family: flags, exptime
		extras = be32(uint32(g.rng.Uint32())) + be32(uint32(g.rng.IntN(100)))
		value = g.value()
	case 0x0e, 0x0f, 0x19, 0x1a: // append, prepend: no extras
		value = g.value()
	case 0x05, 0x06, 0x15, 0x16: // incr, decr: delta, initial, exptime
		extras = strings.Repeat("\x00", 20)
	case 0x1c, 0x1d, 0x1e, 0x23, 0x24, 0x08, 0x18, 0x1b: // touch, gat, flush, verbosity: a 32-bit word
		extras = be32(uint32(g.rng.IntN(100)))
		if op == 0x08 || op == 0x18 || op == 0x1b {
			key = ""
		}
	case 0x07, 0x17, 0x0a, 0x0b, 0x10, 0x20: // quit, noop, version, stat, sasl list: no key
		key = ""
		if op == 0x10 && g.rng.IntN(2) == 0 {
			key = g.pick([]string{"settings", "queue", "items", "bogus"})
		}
	case 0x21, 0x22: // sasl auth, step
		key, value = "PLAIN", "\x00guest\x00guest"
	}
	if op == 0x01 || op == 0x04 || op == 0x11 || op == 0x14 {
		if g.rng.IntN(4) == 0 {
			cas = g.rng.Uint64() // ack by a made-up id
		}
	}
	if g.rng.IntN(10) == 0 {
		extras = string(g.noise(8)) // wrong extras
	}
	return mctest.BinFrame(0x80, op, 0, g.rng.Uint32(), cas, extras, key, value)
}

func (g *fuzzGen) pick2(ops ...byte) byte { return ops[g.rng.IntN(len(ops))] }

// hugeRequest declares more than any limit allows, sends some or none of
// it, or sends a line that never ends.
func (g *fuzzGen) hugeRequest(binary bool) string {
	g.count("huge")
	if binary {
		h := mctest.BinFrame(0x80, g.pick2(0x01, 0x00, 0x04, 0x0a, 0x10), 0, 1, 0, "", "", "")
		b := []byte(h)
		// A body of up to 4 GiB, and a key and extras that may not fit it.
		copy(b[8:12], be32(g.rng.Uint32()|uint32(g.rng.IntN(2))<<31))
		if g.rng.IntN(2) == 0 {
			copy(b[2:4], be32(g.rng.Uint32())[2:])
			b[4] = byte(g.rng.IntN(256))
		}
		return string(b) + string(g.noise(g.rng.IntN(100)))
	}
	switch g.rng.IntN(6) {
	case 4:
		// A long wait with more pipelined behind it than a read buffer
		// holds; the client leaves before it ends.
		return "get " + g.idle + "/t=" + g.pick([]string{"60000", "86400000"}) + "\r\n" + strings.Repeat("mn\r\n", 1000+g.rng.IntN(2000))
	case 0:
		return "set " + g.key() + " 0 0 " + g.pick([]string{"4294967295", "4294967296", "2147483648", "99999999999"}) + "\r\nabc"
	case 1:
		return "get " + strings.Repeat("k", 3000) // a line past 2048 bytes without its end
	case 2:
		return "get " + strings.Repeat(g.pick(g.keys)+" ", 70<<10/len(g.keys[0])) // past 64 KiB
	case 3:
		return "ms " + g.key() + " 4294967296 T0\r\n"
	}
	return strings.Repeat("x", 2049) + "\r\n"
}

// noise is up to n random bytes, weighted toward the bytes that mean
// something to a memcache parser.
func (g *fuzzGen) noise(n int) []byte {
	b := make([]byte, 1+g.rng.IntN(max(n, 1)))
	for i := range b {
		switch g.rng.IntN(4) {
		case 0:
			b[i] = noiseBytes[g.rng.IntN(len(noiseBytes))]
		default:
			b[i] = byte(g.rng.IntN(256))
		}
	}
	return b
}

const noiseBytes = " \r\n\x00\x80/=0123456789"

// mutationTokens are inserted by mutate: the bytes and words where
// parsers go wrong.
var mutationTokens = []string{
	" ", "  ", "\r\n", "\r", "\n", "\x00", "\x80", "\xff", "noreply", "/", "/t=", "/open", "amq.",
	"-1", "4294967296", "18446744073709551616", strings.Repeat("a", 300), "\r\n\r\n", "VALUE",
	"get ", "set x 0 0 1\r\n", "mn\r\n",
}

// mutate breaks a request: a few random flips, insertions, deletions,
// duplications, truncations and numbers pushed to their edges. The binary
// magic at the start of a binary request is kept half of the time, so
// that the binary reader is reached.
func (g *fuzzGen) mutate(s string) string {
	b := []byte(s)
	keepMagic := len(b) > 0 && b[0] == 0x80 && g.rng.IntN(2) == 0
	for range 1 + g.rng.IntN(3) {
		if len(b) == 0 {
			b = append(b, g.noise(8)...)
		}
		i := g.rng.IntN(len(b))
		switch g.rng.IntN(7) {
		case 0:
			b[i] = byte(g.rng.IntN(256))
		case 1:
			tok := g.pick(mutationTokens)
			b = append(b[:i], append([]byte(tok), b[i:]...)...)
		case 2:
			j := min(len(b), i+1+g.rng.IntN(8))
			b = append(b[:i], b[j:]...)
		case 3:
			j := min(len(b), i+1+g.rng.IntN(16))
			dup := append([]byte{}, b[i:j]...)
			b = append(b[:j], append(dup, b[j:]...)...)
		case 4:
			b = b[:i]
		case 5:
			// A header field of a binary request set to an edge value.
			if len(b) >= 24 && b[0] == 0x80 {
				f := g.rng.IntN(24)
				b[f] = []byte{0, 0xff, 0x7f, 0x80, 1}[g.rng.IntN(5)]
			}
		case 6:
			// A run of digits replaced by an edge number.
			if j := strings.IndexAny(string(b[i:]), "0123456789"); j >= 0 {
				start := i + j
				end := start
				for end < len(b) && b[end] >= '0' && b[end] <= '9' {
					end++
				}
				b = append(b[:start], append([]byte(g.pick(edgeNumbers)), b[end:]...)...)
			}
		}
	}
	if keepMagic && len(b) > 0 {
		b[0] = 0x80
	}
	return string(b)
}
