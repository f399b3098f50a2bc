package mcproto

import (
	"bytes"
	"time"
)

// MaxKeyTimeout caps the kestrel /t=<ms> wait. A longer wait is refused as malformed: no client
// waits a day on one read, and it bounds the Duration arithmetic.
const MaxKeyTimeout = 24 * time.Hour

// validKey reports whether k is a memcached key by mcbridge's rule: 1-250 bytes, no whitespace
// or control characters. Spaces never reach here (they split tokens); tabs, CR, NUL and DEL do.
func validKey(k []byte) bool {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// KeyOptions are the kestrel options that may follow a queue name in a retrieval key
// ("jobs/close/open/t=500").
type KeyOptions struct {
	Open, Close, Abort, Peek bool
	Timeout                  time.Duration // from t=<ms>
	HasTimeout               bool
}

// Any reports whether the key carried any option.
func (o KeyOptions) Any() bool {
	return o.Open || o.Close || o.Abort || o.Peek || o.HasTimeout
}

// SplitKey splits a key into its queue name and kestrel options: the first '/' ends the name, and
// every later '/'-separated segment must be open, close, abort, peek or t=<ms>. The queue is a
// sub-slice of key.
//
// Errors are *ClientError "bad command line format": an unknown, empty or repeated segment, an
// empty queue name, abort with any other option, peek with open, close or abort, close with t= but
// without open (nothing to wait for), or a t= that is not 0..MaxKeyTimeout in decimal
// milliseconds. SplitKey does not decide which commands may carry options; the caller does.
func SplitKey(key []byte) (queue []byte, opts KeyOptions, err error) {
	i := bytes.IndexByte(key, '/')
	if i < 0 {
		return key, KeyOptions{}, nil
	}
	queue, rest := key[:i], key[i+1:]
	if len(queue) == 0 {
		return nil, KeyOptions{}, errBadFormat
	}
	for {
		seg := rest
		j := bytes.IndexByte(rest, '/')
		if j >= 0 {
			seg, rest = rest[:j], rest[j+1:]
		}
		if !opts.set(seg) {
			return nil, KeyOptions{}, errBadFormat
		}
		if j < 0 {
			break
		}
	}
	if !opts.valid() {
		return nil, KeyOptions{}, errBadFormat
	}
	return queue, opts, nil
}

// set records one option segment; false for an unknown, empty or repeated one.
func (o *KeyOptions) set(seg []byte) bool {
	var flag *bool
	switch string(seg) {
	case "open":
		flag = &o.Open
	case "close":
		flag = &o.Close
	case "abort":
		flag = &o.Abort
	case "peek":
		flag = &o.Peek
	default:
		ms, ok := bytes.CutPrefix(seg, []byte("t="))
		if !ok || o.HasTimeout {
			return false
		}
		n, ok := parseUint(ms, uint64(MaxKeyTimeout/time.Millisecond))
		if !ok {
			return false
		}
		o.Timeout, o.HasTimeout = time.Duration(n)*time.Millisecond, true
		return true
	}
	if *flag {
		return false
	}
	*flag = true
	return true
}

// valid checks the combination, kestrel's: abort stands alone; peek is a read without a
// reservation, so it cannot open, close or abort one; a timeout only makes sense when the command
// fetches a message (plain, open, close/open, peek).
func (o KeyOptions) valid() bool {
	switch {
	case o.Abort:
		return !o.Open && !o.Close && !o.Peek && !o.HasTimeout
	case o.Peek:
		return !o.Open && !o.Close
	case o.Close && !o.Open:
		return !o.HasTimeout
	}
	return true
}
