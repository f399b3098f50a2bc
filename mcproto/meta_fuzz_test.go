package mcproto

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"testing/iotest"
)

// FuzzMeta checks the meta commands: no panic, the parser's general contract (checkedParse), the
// meta promises (a valid key, the base64 key decoding to Keys[0], flags that are tokens of the
// line), and byte-wise reading equal to whole reading, flags included.
func FuzzMeta(f *testing.F) {
	for _, tt := range metaTests {
		f.Add([]byte(tt.input))
	}
	for _, s := range []string{
		"mg k v f k c s t O1 q\r\nmg k T30\r\nmn\r\n",
		"ms k 3 F1 T-1 MS c k O2 b q\r\nabc\r\nmd k C9 q\r\nmn\r\n",
		"ms Zm9v 2 b\r\nhi\r\nmg Zm9v b v k\r\nmd Zm9v b\r\n",
		"ms k 65 q\r\n" + strings.Repeat("v", 65) + "\r\nmn\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkedParse(t, bufio.NewReaderSize(bytes.NewReader(in), 4096))
		whole := metaChecked(t, bufio.NewReaderSize(bytes.NewReader(in), 4096))
		bytewise := metaChecked(t, bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(in)), 16))
		if strings.Join(whole, "\n") != strings.Join(bytewise, "\n") {
			t.Fatalf("whole and byte-wise parsing differ:\n whole %q\nbytes %q", whole, bytewise)
		}
	})
}

func metaChecked(t *testing.T, r *bufio.Reader) []string {
	p := NewParser(r, fuzzMaxItem)
	var out []string
	for i := 0; ; i++ {
		c, err := p.Next()
		out = append(out, describeMeta(c, err))
		if terminal(err) {
			return out
		}
		if i > 1<<16 {
			t.Fatal("no progress")
		}
		if err != nil || !c.Op.IsMeta() || c.Op == OpMetaNoop {
			continue
		}
		m := &c.Meta
		if len(c.Keys) != 1 || !validKey(c.Keys[0]) || len(m.Key) == 0 || len(m.Key) > MaxKeyLen {
			t.Fatalf("%v: keys %q, key as sent %q", c.Op, c.Keys, m.Key)
		}
		if m.Base64 {
			dec, derr := base64.StdEncoding.DecodeString(string(m.Key))
			if derr != nil || !bytes.Equal(dec, c.Keys[0]) {
				t.Fatalf("base64 key %q decoded to %q, want %q (%v)", m.Key, c.Keys[0], dec, derr)
			}
		} else if !bytes.Equal(m.Key, c.Keys[0]) {
			t.Fatalf("key %q as sent, %q parsed", m.Key, c.Keys[0])
		}
		for _, tok := range m.Tokens {
			if len(tok) == 0 || bytes.IndexByte(tok, ' ') >= 0 {
				t.Fatalf("flag token %q", tok)
			}
		}
		if m.Value && c.Op != OpMetaGet {
			t.Fatalf("v on %v", c.Op)
		}
		if len(m.Opaque) >= maxOpaqueLen {
			t.Fatalf("opaque %q over the limit", m.Opaque)
		}
		if (c.Op == OpMetaSet) != (c.Data != nil) || len(c.Data) > fuzzMaxItem {
			t.Fatalf("%v with %d bytes of data", c.Op, len(c.Data))
		}
	}
}
