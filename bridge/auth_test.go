package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/config"
)

// The throttle's arithmetic, without a server.
func TestLoginThrottle(t *testing.T) {
	l := newLoginThrottle()
	now := time.Unix(1000, 0)
	if w, ok := l.reserve("a", now); w != 0 || !ok {
		t.Fatalf("unknown address: wait %v ok %v", w, ok)
	}
	for range 3 {
		l.failed("a", now)
	}
	// Three failures: turns are 200ms apart, from the last failure.
	w1, _ := l.reserve("a", now)
	w2, _ := l.reserve("a", now)
	if w1 != throttleDelay(3) || w2 != 2*throttleDelay(3) {
		t.Errorf("waits %v, %v; want %v, %v", w1, w2, throttleDelay(3), 2*throttleDelay(3))
	}
	if w, _ := l.reserve("b", now); w != 0 {
		t.Errorf("another address waits %v", w)
	}
	// Too many turns queued: refused unchecked.
	var refused bool
	for range 100 {
		if _, ok := l.reserve("a", now); !ok {
			refused = true
			break
		}
	}
	if !refused {
		t.Error("queued logins never refused")
	}
	// Forgotten after the window.
	if w, ok := l.reserve("a", now.Add(throttleWindow+time.Second)); w != 0 || !ok {
		t.Errorf("after the window: wait %v ok %v", w, ok)
	}
	// Bounded.
	for i := range throttleMaxAddrs + 10 {
		l.failed(fmt.Sprint(i), now)
	}
	if n := l.size(); n > throttleMaxAddrs {
		t.Errorf("%d addresses remembered, max %d", n, throttleMaxAddrs)
	}
	if throttleDelay(100) != throttleMax {
		t.Errorf("delay after 100 failures %v, want %v", throttleDelay(100), throttleMax)
	}
}

func TestLoginParsing(t *testing.T) {
	auth := &config.Auth{VHost: "/"}
	for _, tc := range []struct {
		data, user, password string
		ok                   bool
	}{
		{"bob secret", "bob", "secret", true},
		{"bob pass with spaces", "bob", "pass with spaces", true},
		{"bob ", "bob", "", true},
		{"bob", "", "", false},
		{" secret", "", "", false},
	} {
		user, password, ok := loginCredentials([]byte(tc.data))
		if user != tc.user || password != tc.password || ok != tc.ok {
			t.Errorf("%q: got %q %q %v", tc.data, user, password, ok)
		}
	}
	for name, want := range map[string]tenantKey{
		"bob":         {"/", "bob"},
		"prod:bob":    {"prod", "bob"},
		"prod:bob:x":  {"prod", "bob:x"},
		":bob":        {"/", ":bob"},
		"prod:":       {"/", "prod:"},
		"%2F:bob":     {"%2F", "bob"},
		"a/b:c@d.com": {"a/b", "c@d.com"},
	} {
		if got := tenantKeyFor(name, auth); got != want {
			t.Errorf("%q: got %+v, want %+v", name, got, want)
		}
	}
	if looksLikeLogin([]byte("hello\r\nbye")) || looksLikeLogin([]byte("single")) || !looksLikeLogin([]byte("bob secret")) {
		t.Error("looksLikeLogin")
	}
}
