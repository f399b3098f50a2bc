package config

import (
	"fmt"
	"strings"
	"testing"
)

// password is the secret every test config here hides in a URL.
const password = "hunter2"

// No error shows a password, whatever wrong place or shape the URL holding
// it is written in: every message that repeats a value is exercised with a
// URL as that value.
func TestNoPasswordInErrors(t *testing.T) {
	const u = "amqp://guest:" + password + "@rabbit:5672/"
	tests := []struct{ name, yaml string }{
		{"urls as a string", "amqp:\n  urls: " + u + "\n"},
		{"urls as a mapping", "amqp:\n  urls: {primary: " + u + "}\n"},
		{"url in a list in the list", "amqp:\n  urls: [[" + u + "]]\n"},
		{"url in a mapping in the list", "amqp:\n  urls: [{url: " + u + "}]\n"},
		{"bad scheme", `amqp: {urls: ["http://guest:hunter2@rabbit:5672/"]}`},
		{"no scheme", `amqp: {urls: ["guest:hunter2@rabbit:5672"]}`},
		{"port out of range", `amqp: {urls: ["amqp://guest:hunter2@rabbit:99999/"]}`},
		{"port not a number", `amqp: {urls: ["amqp://guest:hunter2@rabbit:56x72/"]}`},
		{"password with a slash", `amqp: {urls: ["amqp://guest:hunter2/x@rabbit/"]}`},
		{"password with a question mark", `amqp: {urls: ["amqp://guest:hunter2?x@rabbit/"]}`},
		{"password with a hash", `amqp: {urls: ["amqp://guest:hunter2#x@rabbit/"]}`},
		{"password with a slash after digits", `amqp: {urls: ["amqp://guest:12/hunter2@rabbit/"]}`},
		{"password with an at and a bad port", `amqp: {urls: ["amqp://guest:hunter2@x@rabbit:bad/"]}`},
		{"fragment", `amqp: {urls: ["amqp://guest:hunter2@rabbit/#x"]}`},
		{"duplicate", "amqp:\n  urls:\n    - " + u + "\n    - " + u + "\n"},
		{"empty item", "amqp:\n  urls:\n    - " + u + "\n    -\n"},
		{"amqp.tls as a url", "amqp: {urls: [" + u + "], tls: " + u + "}"},
		{"amqp.tls field as a list", "amqp: {urls: [amqps://rabbit/], tls: {ca_file: [" + u + "]}}"},
		{"amqp.tls without amqps", "amqp: {urls: [" + u + "], tls: {ca_file: ca.pem}}"},
		{"tls as a url", "tls: " + u + "\n"},
		{"tls key without cert", "tls: {key_file: " + u + "}"},
		{"auth as a url", "auth: " + u + "\n"},
		{"auth.mode as a url", "auth: {mode: " + u + "}"},
		{"auth.anonymous as a url", "auth: {mode: broker, anonymous: " + u + "}"},
		{"auth.vhost with a control character", `auth: {vhost: "amqp://guest:hunter2@rabbit/` + "\\u0001" + `"}`},
		{"auth.vhost too long", `auth: {vhost: "amqp://guest:hunter2@rabbit/` + strings.Repeat("v", 300) + `"}`},
		{"auth.idle_close as a url", "auth: {idle_close: " + u + "}"},
		{"auth.max_users as a url", "auth: {max_users: " + u + "}"},
		{"url as a key", `"` + u + `": 1`},
		{"url as a key in auth", "auth:\n  \"" + u + "\": 1\n"},
		{"url as listen", `listen: "guest:hunter2@rabbit"`},
		{"url as metrics_listen", `metrics_listen: "` + u + `"`},
		{"url as a size", `limits: {max_item_size: "1guest:hunter2@rabbit"}`},
		{"url as a duration", "amqp: {confirm_timeout: " + u + "}"},
		{"url as a number", "limits: {max_connections: " + u + "}"},
		{"url as a boolean", "auto_declare: {enabled: " + u + "}"},
		{"url as a queue type", "defaults: {queue_type: " + u + "}"},
		{"url as a key pattern", `auto_declare: {keys: ["guest:hunter2@rabbit/x"]}`},
		{"url as a key pattern word", `auto_declare: {keys: ["a.guest:hunter2@rabbit#"]}`},
		{"url as an exchange name", `exchanges: [{name: "guest:hunter2@rabbit x", type: fanout}]`},
		{"url as a queue name", "queues: [{name: " + u + "}]"},
		{"url as a repeated queue name", "queues: [{name: 'guest:hunter2@rabbit'}, {name: 'guest:hunter2@rabbit'}]"},
		{"url as a binding's exchange", "queues: [{name: q, bindings: [{exchange: " + u + "}]}]"},
		{"url as a routing key", "exchanges: [{name: x, type: fanout}]\nqueues: [{name: q, bindings: [{exchange: x, routing_key: " + u + "}]}]"},
		{"url as a dead letter exchange", `queues: [{name: q, dead_letter_exchange: "guest:hunter2@rabbit x"}]`},
		{"url as an alias", "listen: *guest:hunter2@rabbit\n"},
		{"url in a syntax error", "amqp:\n  urls: [" + u + "\n"},
		{"url in a second document", "listen: 127.0.0.1:1\n---\n" + u + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Load(%q) succeeded", tt.yaml)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error leaks the password: %s", err)
			}
			if strings.Contains(fmt.Sprintf("%#v %+v", err, err), password) {
				t.Errorf("formatted error leaks the password")
			}
		})
	}
}

// Every URL that loads prints redacted in stats settings.
func TestNoPasswordInSettings(t *testing.T) {
	c, err := Load([]byte(`amqp: {urls: ["amqp://guest:hunter2@a/", "amqps://guest:hunter2@b/vh", "amqp://guest:p%40hunter2@c/"]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Settings() {
		if strings.Contains(s.Value, password) {
			t.Errorf("%s = %s leaks the password", s.Name, s.Value)
		}
	}
}

// passwordsOnlyInUserinfo reports whether every "hunter2" in data sits
// where a URL keeps its password, between ':' and '@': there, any message
// that repeats a value must mask it.
func passwordsOnlyInUserinfo(data string) bool {
	for i := strings.Index(data, password); i >= 0; {
		end := i + len(password)
		if i == 0 || data[i-1] != ':' || end >= len(data) || data[end] != '@' {
			return false
		}
		next := strings.Index(data[end:], password)
		if next < 0 {
			break
		}
		i = end + next
	}
	return strings.Contains(data, password)
}
