package mcproto

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// fuzzMaxItem is small so that random inputs reach the too-large path.
const fuzzMaxItem = 64

// FuzzParse checks that no input panics the parser, that whatever it returns obeys the contract
// (valid keys, data within the limit), and that reading the input one byte at a time through a
// minimal buffer gives the same results as reading it whole.
func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		if len(tt.input) <= 4096 {
			f.Add([]byte(tt.input))
		}
	}
	for _, s := range []string{
		"set k 0 0 64\r\n" + strings.Repeat("v", 64) + "\r\n",
		"set k 0 0 65\r\n" + strings.Repeat("v", 65) + "\r\nget k\r\n",
		"get a/close/open/t=100 b/peek\r\ngets c\r\n",
		"cas k 0 0 1 1 noreply\r\nx\r\nincr k 1\r\ndecr k 1 noreply\r\ntouch k 1\r\n",
		"stats queue\r\nverbosity 1 noreply\r\nflush_all 0\r\nversion\r\nquit\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole := checkedParse(t, bufio.NewReaderSize(bytes.NewReader(in), 4096))
		bytewise := checkedParse(t, bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(in)), 16))
		if strings.Join(whole, "\n") != strings.Join(bytewise, "\n") {
			t.Fatalf("whole and byte-wise parsing differ:\n whole %q\nbytes %q", whole, bytewise)
		}
	})
}

func checkedParse(t *testing.T, r *bufio.Reader) []string {
	p := NewParser(r, fuzzMaxItem)
	var out []string
	for i := 0; ; i++ {
		c, err := p.Next()
		if terminal(err) {
			return append(out, "end "+describe(nil, err))
		}
		if i > 1<<16 {
			t.Fatal("no progress")
		}
		out = append(out, describe(c, err))
		if err != nil {
			if c != nil && c.Data != nil {
				t.Fatalf("Data returned with error %v", err)
			}
			continue
		}
		if len(c.Data) > fuzzMaxItem {
			t.Fatalf("Data of %d bytes over the %d limit", len(c.Data), fuzzMaxItem)
		}
		if c.Op.IsStorage() != (c.Data != nil) {
			t.Fatalf("%v with Data %v", c.Op, c.Data != nil)
		}
		switch {
		case c.Op.IsRetrieval():
			if len(c.Keys) == 0 {
				t.Fatalf("%v without keys", c.Op)
			}
		case c.Op.IsStorage(), c.Op == OpDelete, c.Op == OpTouch, c.Op == OpIncr, c.Op == OpDecr, c.Op == OpMetaGet, c.Op == OpMetaDelete:
			if len(c.Keys) != 1 {
				t.Fatalf("%v with %d keys", c.Op, len(c.Keys))
			}
		default:
			if len(c.Keys) != 0 {
				t.Fatalf("%v with keys", c.Op)
			}
		}
		for _, k := range c.Keys {
			if len(k) == 0 || len(k) > MaxKeyLen || bytes.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("invalid key %q accepted", k)
			}
		}
	}
}

// FuzzSplitKey checks that SplitKey never panics and that what it accepts is consistent: a
// non-empty queue that is a prefix of the key without '/', a valid option set, and options that
// survive being written back out in another order.
func FuzzSplitKey(f *testing.F) {
	for _, s := range []string{"jobs", "jobs/open", "jobs/close/open", "jobs/abort", "jobs/peek/t=5",
		"jobs/t=86400000", "jobs//open", "/open", "jobs/t=", "jobs/close/t=1", "a/b/c"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, key []byte) {
		queue, opts, err := SplitKey(key)
		if err != nil {
			if queue != nil || opts != (KeyOptions{}) {
				t.Fatalf("error %v with results %q %+v", err, queue, opts)
			}
			return
		}
		if !bytes.HasPrefix(key, queue) || bytes.IndexByte(queue, '/') >= 0 {
			t.Fatalf("queue %q from key %q", queue, key)
		}
		if (len(queue) < len(key)) != opts.Any() {
			t.Fatalf("key %q: options %+v", key, opts)
		}
		if len(queue) == 0 && len(key) > 0 {
			t.Fatalf("empty queue from %q", key)
		}
		if opts.Timeout < 0 || opts.Timeout > MaxKeyTimeout || (!opts.HasTimeout && opts.Timeout != 0) {
			t.Fatalf("timeout %v", opts.Timeout)
		}
		// Write the options back in reverse canonical order; they must read the same.
		rebuilt := append([]byte(nil), queue...)
		if opts.HasTimeout {
			rebuilt = append(rebuilt, "/t="+strconv.FormatInt(opts.Timeout.Milliseconds(), 10)...)
		}
		for _, o := range []struct {
			on   bool
			name string
		}{{opts.Peek, "peek"}, {opts.Abort, "abort"}, {opts.Open, "open"}, {opts.Close, "close"}} {
			if o.on {
				rebuilt = append(rebuilt, "/"+o.name...)
			}
		}
		q2, o2, err := SplitKey(rebuilt)
		if err != nil || !bytes.Equal(q2, queue) || o2 != opts {
			t.Fatalf("%q -> %+v, rebuilt %q -> %q %+v %v", key, opts, rebuilt, q2, o2, err)
		}
	})
}
