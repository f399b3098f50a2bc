package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// -log-format and -log-level build the slog handler; bad values are refused
// with the flag's name.
func TestNewLogger(t *testing.T) {
	tests := []struct {
		name, level, format string
		want                []string // substrings of the output of one Info and one Debug line
		notWant             []string
		wantErr             string
	}{
		{name: "text info", level: "info", format: "text", want: []string{"level=INFO msg=hello k=v"}, notWant: []string{"DEBUG"}},
		{name: "json info", level: "info", format: "json", want: []string{`"level":"INFO","msg":"hello","k":"v"`}, notWant: []string{"DEBUG"}},
		{name: "debug", level: "debug", format: "text", want: []string{"level=INFO", "level=DEBUG msg=detail"}},
		{name: "warn drops info", level: "warn", format: "json", notWant: []string{"hello", "detail"}},
		{name: "error", level: "error", format: "text", notWant: []string{"hello"}},
		{name: "bad level", level: "loud", format: "text", wantErr: `-log-level "loud": want debug, info, warn or error`},
		{name: "bad format", level: "info", format: "xml", wantErr: `-log-format "xml": want text or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := newLogger(&buf, tt.level, tt.format)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Info("hello", "k", "v")
			log.Debug("detail")
			for _, w := range tt.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("output %q lacks %q", buf.String(), w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(buf.String(), w) {
					t.Errorf("output %q has %q", buf.String(), w)
				}
			}
			if tt.format == "json" {
				for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
					if l != "" && !json.Valid([]byte(l)) {
						t.Errorf("not JSON: %q", l)
					}
				}
			}
		})
	}
	// run refuses them before touching the broker or a port.
	err := run(context.Background(), []string{"-log-format", "xml"}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "-log-format") {
		t.Errorf("run -log-format xml: %v", err)
	}
}

// At debug level a connection logs one line when it opens and one when it
// closes, with the peer and the reason.
func TestLogsConnectionsAtDebug(t *testing.T) {
	q := testbroker.Name(t, "q")
	g := startRun(t, testYAML(t, q), "-log-level", "debug")
	c1 := mctest.Dial(t, g.mcAddr)
	c1.Do("version\r\n", "VERSION "+bridge.Version+"\r\n")
	c1.Quit()
	c2 := mctest.Dial(t, g.mcAddr)
	c2.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")
	c2.Close()

	var opened, closed []logLine
	testbroker.Eventually(t, 10*time.Second, "two connections logged closed", func() bool {
		opened, closed = nil, nil
		for _, l := range jsonLines(t, g.logs.String()) {
			switch l.str("msg") {
			case "connection opened":
				opened = append(opened, l)
			case "connection closed":
				closed = append(closed, l)
			}
		}
		return len(closed) == 2
	})
	if len(opened) != 2 {
		t.Errorf("%d \"connection opened\" lines, want 2", len(opened))
	}
	for _, l := range append(opened, closed...) {
		if l.str("level") != "DEBUG" || !strings.HasPrefix(l.str("remote"), "127.0.0.1:") || l.str("component") != "bridge" {
			t.Errorf("connection line %v: want level DEBUG, component bridge and the remote address", l)
		}
	}
	reasons := []string{closed[0].str("reason"), closed[1].str("reason")}
	if !(strings.Contains(strings.Join(reasons, ","), "client quit") && strings.Contains(strings.Join(reasons, ","), "client closed")) {
		t.Errorf("close reasons %v, want client quit and client closed", reasons)
	}
}

// At info level commands log nothing: traffic leaves no line between
// "mcbridge serving" and "shutting down". Broker state changes do log: a
// lost connection at WARN, its return at INFO.
func TestLogsQuietAtInfo(t *testing.T) {
	q := testbroker.Name(t, "q")
	g := startRun(t, testYAML(t, q))
	for range 3 {
		c := mctest.Dial(t, g.mcAddr)
		for range 5 {
			c.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")
			c.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nx\r\nEND\r\n")
			c.Do("delete "+q+"\r\n", "DELETED\r\n")
			c.Do("get "+q+"\r\n", "END\r\n")
			c.Do("bogus\r\n", "ERROR\r\n")
			c.Do("set a/b 0 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\n")
		}
		c.Quit()
	}
	// A connection that closes holding a reservation: the requeue is
	// silent too.
	c := mctest.Dial(t, g.mcAddr)
	c.Do("set "+q+" 0 0 1\r\ny\r\n", "STORED\r\n")
	c.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\ny\r\nEND\r\n")
	c.Close()
	testbroker.Eventually(t, 10*time.Second, "the disconnect requeue", func() bool {
		return testbroker.QueueDepth(t, q) == 1
	})

	lines := jsonLines(t, g.logs.String())
	var serving int = -1
	for i, l := range lines {
		if l.str("level") == "DEBUG" {
			t.Errorf("DEBUG line at -log-level info: %v", l)
		}
		if l.str("msg") == "mcbridge serving" {
			serving = i
			// Operators read the bound addresses there.
			if l.str("listen") != g.mcAddr || l.str("metrics") != g.httpAddr {
				t.Errorf("\"mcbridge serving\" names listen %q and metrics %q, want the bound %s and %s",
					l.str("listen"), l.str("metrics"), g.mcAddr, g.httpAddr)
			}
		}
	}
	if serving < 0 {
		t.Fatal("no \"mcbridge serving\" line")
	}
	for _, l := range lines[serving+1:] {
		t.Errorf("a line while clients only sent commands: %v", l)
	}
	var up int
	for _, l := range lines[:serving] {
		if l.str("msg") == "broker connection up" && l.str("level") == "INFO" && l.str("component") == "amqp" {
			up++
		}
	}
	if up < 2 {
		t.Errorf("%d \"broker connection up\" INFO lines at start, want one per connection (publish, consume)", up)
	}

	// A broker state change is worth a line.
	mark := len(lines)
	testbroker.MustCloseConnections(t, "mcbridge-test-"+t.Name()+" publish")
	testbroker.Eventually(t, 20*time.Second, "the lost connection and its return to be logged", func() bool {
		lost, back := false, false
		for _, l := range jsonLines(t, g.logs.String())[mark:] {
			switch {
			case l.str("msg") == "broker connection lost" && l.str("level") == "WARN":
				lost = true
			case l.str("msg") == "broker connection up" && l.str("level") == "INFO" && lost:
				back = true
			}
		}
		return back
	})
}
