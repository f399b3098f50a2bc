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

// The frames tests send and expect most, for any opcode and status type
// (mcproto's, or plain numbers where a test must not depend on mcproto).

// BinRequest is a request frame (magic 0x80).
func BinRequest[Op ~uint8](op Op, opaque uint32, cas uint64, extras, key, value string) string {
	return BinFrame(0x80, byte(op), 0, opaque, cas, extras, key, value)
}

// BinResponse is a response frame (magic 0x81).
func BinResponse[Op ~uint8, St ~uint16](op Op, status St, opaque uint32, cas uint64, extras, key, value string) string {
	return BinFrame(0x81, byte(op), uint16(status), opaque, cas, extras, key, value)
}

// BE32 is v as 4 big-endian bytes.
func BE32(v uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return string(b[:])
}

// SetExtras are a storage request's extras: flags and exptime.
func SetExtras(flags, exptime uint32) string { return BE32(flags) + BE32(exptime) }

// BinGet is a get-family request of key.
func BinGet[Op ~uint8](op Op, opaque uint32, key string) string {
	return BinRequest(op, opaque, 0, "", key, "")
}

// BinSet is a storage request of value under key, exptime 0.
func BinSet[Op ~uint8](op Op, opaque uint32, key string, flags uint32, value string) string {
	return BinRequest(op, opaque, 0, SetExtras(flags, 0), key, value)
}

// BinDelete is a delete request of key, with cas.
func BinDelete[Op ~uint8](op Op, opaque uint32, cas uint64, key string) string {
	return BinRequest(op, opaque, cas, "", key, "")
}

// BinOK is an empty successful response.
func BinOK[Op ~uint8](op Op, opaque uint32) string {
	return BinResponse(op, uint16(0), opaque, 0, "", "", "")
}

// BinErr is an error response with its message.
func BinErr[Op ~uint8, St ~uint16](op Op, status St, opaque uint32, msg string) string {
	return BinResponse(op, status, opaque, 0, "", "", msg)
}
