package mcproto

import (
	"errors"
	"testing"
	"time"
)

func TestSplitKey(t *testing.T) {
	tests := []struct {
		name      string
		key       string
		wantQueue string
		want      KeyOptions
		wantErr   bool
	}{
		{name: "plain", key: "jobs", wantQueue: "jobs"},
		{name: "dots", key: "logs.app.error", wantQueue: "logs.app.error"},
		{name: "fanout child", key: "orders+billing", wantQueue: "orders+billing"},
		{name: "open", key: "jobs/open", wantQueue: "jobs", want: KeyOptions{Open: true}},
		{name: "close", key: "jobs/close", wantQueue: "jobs", want: KeyOptions{Close: true}},
		{name: "close open", key: "jobs/close/open", wantQueue: "jobs", want: KeyOptions{Close: true, Open: true}},
		{name: "open close", key: "jobs/open/close", wantQueue: "jobs", want: KeyOptions{Close: true, Open: true}},
		{name: "abort", key: "jobs/abort", wantQueue: "jobs", want: KeyOptions{Abort: true}},
		{name: "peek", key: "jobs/peek", wantQueue: "jobs", want: KeyOptions{Peek: true}},
		{name: "t alone", key: "jobs/t=500", wantQueue: "jobs", want: KeyOptions{Timeout: 500 * time.Millisecond, HasTimeout: true}},
		{name: "t zero", key: "jobs/t=0", wantQueue: "jobs", want: KeyOptions{HasTimeout: true}},
		{name: "t open", key: "jobs/t=10/open", wantQueue: "jobs", want: KeyOptions{Open: true, Timeout: 10 * time.Millisecond, HasTimeout: true}},
		{name: "open t", key: "jobs/open/t=10", wantQueue: "jobs", want: KeyOptions{Open: true, Timeout: 10 * time.Millisecond, HasTimeout: true}},
		{name: "close open t", key: "jobs/close/open/t=1000", wantQueue: "jobs", want: KeyOptions{Close: true, Open: true, Timeout: time.Second, HasTimeout: true}},
		{name: "t close open", key: "jobs/t=1000/close/open", wantQueue: "jobs", want: KeyOptions{Close: true, Open: true, Timeout: time.Second, HasTimeout: true}},
		{name: "peek t", key: "jobs/peek/t=5", wantQueue: "jobs", want: KeyOptions{Peek: true, Timeout: 5 * time.Millisecond, HasTimeout: true}},
		{name: "t 24h", key: "jobs/t=86400000", wantQueue: "jobs", want: KeyOptions{Timeout: 24 * time.Hour, HasTimeout: true}},
		{name: "t leading zeros", key: "jobs/t=007", wantQueue: "jobs", want: KeyOptions{Timeout: 7 * time.Millisecond, HasTimeout: true}},

		{name: "empty queue", key: "/open", wantErr: true},
		{name: "only slash", key: "/", wantErr: true},
		{name: "trailing slash", key: "jobs/", wantErr: true},
		{name: "empty segment", key: "jobs//open", wantErr: true},
		{name: "empty last segment", key: "jobs/open/", wantErr: true},
		{name: "unknown", key: "jobs/foo", wantErr: true},
		{name: "case matters", key: "jobs/OPEN", wantErr: true},
		{name: "second name part", key: "jobs/sub/open", wantErr: true},
		{name: "duplicate open", key: "jobs/open/open", wantErr: true},
		{name: "duplicate close", key: "jobs/close/close", wantErr: true},
		{name: "duplicate abort", key: "jobs/abort/abort", wantErr: true},
		{name: "duplicate peek", key: "jobs/peek/peek", wantErr: true},
		{name: "duplicate t", key: "jobs/t=1/t=2", wantErr: true},
		{name: "abort open", key: "jobs/abort/open", wantErr: true},
		{name: "abort close", key: "jobs/close/abort", wantErr: true},
		{name: "abort peek", key: "jobs/abort/peek", wantErr: true},
		{name: "abort t", key: "jobs/abort/t=5", wantErr: true},
		{name: "peek open", key: "jobs/peek/open", wantErr: true},
		{name: "peek close", key: "jobs/close/peek", wantErr: true},
		{name: "close t", key: "jobs/close/t=5", wantErr: true},
		{name: "t empty", key: "jobs/t=", wantErr: true},
		{name: "t negative", key: "jobs/t=-1", wantErr: true},
		{name: "t not decimal", key: "jobs/t=1s", wantErr: true},
		{name: "t plus", key: "jobs/t=+5", wantErr: true},
		{name: "t over 24h", key: "jobs/t=86400001", wantErr: true},
		{name: "t overflow", key: "jobs/t=99999999999999999999999", wantErr: true},
		{name: "t without equals", key: "jobs/t", wantErr: true},
		{name: "timeout word", key: "jobs/timeout=5", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			queue, opts, err := SplitKey([]byte(tt.key))
			if tt.wantErr {
				var ce *ClientError
				if !errors.As(err, &ce) || ce.Msg != MsgBadFormat {
					t.Fatalf("SplitKey(%q) = %q, %+v, %v; want CLIENT_ERROR %s", tt.key, queue, opts, err, MsgBadFormat)
				}
				return
			}
			if err != nil {
				t.Fatalf("SplitKey(%q): %v", tt.key, err)
			}
			if string(queue) != tt.wantQueue || opts != tt.want {
				t.Errorf("SplitKey(%q) = %q, %+v; want %q, %+v", tt.key, queue, opts, tt.wantQueue, tt.want)
			}
			if opts.Any() != (tt.want != KeyOptions{}) {
				t.Errorf("Any() = %v", opts.Any())
			}
		})
	}
}

func TestSplitKeyNoAllocs(t *testing.T) {
	key := []byte("jobs/close/open/t=1000")
	if n := testing.AllocsPerRun(100, func() { SplitKey(key) }); n != 0 {
		t.Errorf("%v allocs per SplitKey", n)
	}
}

func TestValidKey(t *testing.T) {
	for key, want := range map[string]bool{
		"a":       true,
		k250:      true,
		k251:      false,
		"":        false,
		"a b":     false,
		"a\tb":    false,
		"a\r":     false,
		"\x00":    false,
		"a\x7f":   false,
		"ключ":    true,
		"q/t=5":   true,
		"amq.foo": true, // refusing broker-reserved names is the bridge's job
	} {
		if validKey([]byte(key)) != want {
			t.Errorf("validKey(%q) = %v", key, !want)
		}
	}
}
