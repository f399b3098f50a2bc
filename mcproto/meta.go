package mcproto

import (
	"encoding/base64"
	"math"
	"strconv"
)

// Meta commands (memcached's protocol.txt, "Meta Commands"):
//
//	mg <key> <flag>*\r\n
//	ms <key> <datalen> <flag>*\r\n<data block>\r\n
//	md <key> <flag>*\r\n
//	mn\r\n
//
// A flag is a token whose first byte names it; some carry a value in the rest of the token
// (T30, F5, Oabc). The parser accepts memcached's whole flag set and ignores flags it has no use
// for, unknown ones included; it checks only the values it decodes.

// maxOpaqueLen is memcached's MFLAG_MAX_OPAQUE_LENGTH: an O token of more bytes (O included) is
// refused.
const maxOpaqueLen = 32

// Meta reply texts after CLIENT_ERROR, memcached's spellings.
const (
	MsgMetaDecodeKey     = "error decoding key"
	MsgMetaBadToken      = "bad token in command line format"
	MsgMetaOpaqueTooLong = "opaque token too long"
	MsgMetaBadMode       = "invalid mode for ms M token"
	MsgMetaModeLength    = "incorrect length for M token"
)

var (
	errMetaDecodeKey     = &ClientError{Msg: MsgMetaDecodeKey}
	errMetaBadToken      = &ClientError{Msg: MsgMetaBadToken}
	errMetaOpaqueTooLong = &ClientError{Msg: MsgMetaOpaqueTooLong}
	errMetaBadMode       = &ClientError{Msg: MsgMetaBadMode}
	errMetaModeLength    = &ClientError{Msg: MsgMetaModeLength}
)

// MetaFlags are the flags of an mg, ms or md line. Numeric flags land in the Command: F in Flags
// (ms), T in Exptime (mg, ms), C in Cas (ms, md).
type MetaFlags struct {
	// Key is the key as sent (still base64 when Base64): replies echo it.
	Key []byte
	// Tokens are all flag tokens in the order sent (sub-slices of the line), so that return flags
	// can be written in the order the client asked for them.
	Tokens [][]byte

	Base64 bool   // b: the key is base64; Command.Keys[0] holds it decoded
	Value  bool   // v (mg): return the value
	Quiet  bool   // q: noreply semantics for the success (and mg miss) return codes
	HasTTL bool   // T given (mg, ms)
	HasCas bool   // C given (ms, md)
	Mode   byte   // ms M token, upper case (E A P R S); 0 when absent
	Opaque []byte // O token without its O; nil when absent
}

// parseMeta parses "mg|md <key> <flag>*".
func (p *Parser) parseMeta(args [][]byte) error {
	if len(args) == 0 {
		return errBadFormat
	}
	return p.parseMetaKeyFlags(args, args[1:])
}

// parseMetaSet parses "ms <key> <datalen> <flag>*" and reads its data block. As with set, once the
// length is known the block is consumed whatever else is wrong with the line.
func (p *Parser) parseMetaSet(args [][]byte) error {
	if len(args) < 2 {
		return errBadFormat
	}
	size, ok := parseUint(args[1], maxDataLen)
	if !ok {
		return errBadFormat
	}
	bad := p.parseMetaKeyFlags(args, args[2:])
	return p.readBlock(int(size), bad)
}

// parseMetaKeyFlags reads the flags and then the key args[0], decoding it when the b flag is set.
// The decoded key replaces args[0] in the token list, so Keys needs no allocation.
func (p *Parser) parseMetaKeyFlags(args, flags [][]byte) error {
	c := &p.cmd
	m := &c.Meta
	m.Key = args[0]
	m.Tokens = flags
	c.Keys = args[:1]
	var flagErr error
	fail := func(e error) {
		if flagErr == nil {
			flagErr = e
		}
	}
	for _, t := range flags {
		switch t[0] { // tokens are never empty
		case 'b':
			m.Base64 = true
		case 'v':
			m.Value = c.Op == OpMetaGet
		case 'q':
			m.Quiet = true
		case 'O':
			if len(t) > maxOpaqueLen {
				fail(errMetaOpaqueTooLong)
			}
			m.Opaque = t[1:]
		case 'T':
			if c.Op == OpMetaDelete {
				continue // md T only matters with I (invalidate), which a queue has no use for
			}
			v, ok := parseInt(t[1:])
			if !ok {
				fail(errMetaBadToken)
			}
			c.Exptime, m.HasTTL = v, true
		case 'F':
			if c.Op != OpMetaSet {
				continue
			}
			v, ok := parseUint(t[1:], math.MaxUint32)
			if !ok {
				fail(errBadFormat)
			}
			c.Flags = uint32(v)
		case 'C':
			if c.Op == OpMetaGet {
				continue
			}
			v, ok := parseUint(t[1:], math.MaxUint64)
			if !ok {
				fail(errMetaBadToken)
			}
			c.Cas, m.HasCas = v, true
		case 'M':
			if c.Op != OpMetaSet {
				continue
			}
			if len(t) != 2 {
				fail(errMetaModeLength)
				continue
			}
			switch mode := t[1] &^ 0x20; mode { // upper case
			case 'E', 'A', 'P', 'R', 'S':
				m.Mode = mode
			default:
				fail(errMetaBadMode)
			}
		}
	}

	key := args[0]
	if len(key) > MaxKeyLen {
		return errBadFormat
	}
	if m.Base64 {
		n, err := base64.StdEncoding.Decode(p.key[:], key)
		if err != nil {
			return errMetaDecodeKey
		}
		key = p.key[:n:n]
		args[0] = key
	}
	if !validKey(key) {
		return errBadFormat
	}
	return flagErr
}

// Meta return codes.
const (
	MetaValue     = "VA"
	MetaHit       = "HD"
	MetaMiss      = "EN"
	MetaNotFound  = "NF"
	MetaNotStored = "NS"
	MetaExists    = "EX"
	metaNoop      = "MN\r\n"
)

// MetaCode starts a reply line with a return code (MetaHit, MetaMiss, ...). Return flags follow
// with MetaFlag*, and MetaEnd ends the line.
func (w *Writer) MetaCode(code string) { w.str(code) }

// MetaValue starts a value reply, "VA <size>"; after its return flags and MetaEnd, MetaData
// writes the data block.
func (w *Writer) MetaValue(size int) {
	w.str(MetaValue)
	w.str(" ")
	w.uint(uint64(size))
}

// MetaFlag writes a return flag without a value (" b").
func (w *Writer) MetaFlag(f byte) {
	w.bytes(append(w.num[:0], ' ', f))
}

// MetaFlagUint writes " <f><v>".
func (w *Writer) MetaFlagUint(f byte, v uint64) {
	w.bytes(strconv.AppendUint(append(w.num[:0], ' ', f), v, 10))
}

// MetaFlagInt writes " <f><v>" for a signed value (t-1).
func (w *Writer) MetaFlagInt(f byte, v int64) {
	w.bytes(strconv.AppendInt(append(w.num[:0], ' ', f), v, 10))
}

// MetaFlagBytes writes " <f><b>" (the key, the opaque).
func (w *Writer) MetaFlagBytes(f byte, b []byte) {
	w.MetaFlag(f)
	w.bytes(b)
}

// MetaEnd ends a reply line.
func (w *Writer) MetaEnd() { w.str(crlf) }

// MetaData writes a value's data block and its CR LF.
func (w *Writer) MetaData(data []byte) {
	w.bytes(data)
	w.str(crlf)
}

// MetaNoop writes mn's reply, MN.
func (w *Writer) MetaNoop() { w.str(metaNoop) }
