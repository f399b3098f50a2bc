package mctest

import "encoding/binary"

// BinFrame builds one binary-protocol message (request or response) byte by
// byte from the protocol's header layout, independently of mcproto's
// reader and writer, so that a test of either does not check the code
// against itself.
func BinFrame(magic, op byte, status uint16, opaque uint32, cas uint64, extras, key, value string) string {
	h := make([]byte, 24)
	h[0] = magic
	h[1] = op
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	h[4] = byte(len(extras))
	binary.BigEndian.PutUint16(h[6:], status)
	binary.BigEndian.PutUint32(h[8:], uint32(len(extras)+len(key)+len(value)))
	binary.BigEndian.PutUint32(h[12:], opaque)
	binary.BigEndian.PutUint64(h[16:], cas)
	return string(h) + extras + key + value
}
