package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSettings(t *testing.T) {
	c, err := Load([]byte(`
metrics_listen: ""
amqp:
  urls: ["amqp://app:hunter2@rabbit-1:5672/prod", "amqps://app:hunter2@rabbit-2/prod"]
  connection_name: "edge gateway"
limits: {max_item_size: 512KiB, max_pending_bytes: 1MiB}
auth: {mode: broker, vhost: "edge hosts"}
auto_declare: {keys: ["jobs.*", "tmp.#"]}
exchanges:
  - {name: logs, type: topic, keys: ["logs.#", "audit"]}
queues:
  - name: errors
    type: quorum
    delivery_limit: 3
    message_ttl: 1500ms
    bindings: [{exchange: logs, routing_key: logs.*.error}, {exchange: logs}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Setting{
		{"listen", "127.0.0.1:11211"},
		{"metrics_listen", `""`},
		{"amqp.urls", "amqp://app:xxxxx@rabbit-1:5672/prod,amqps://app:xxxxx@rabbit-2/prod"},
		{"amqp.connection_name", `"edge gateway"`},
		{"amqp.consume_connections", "1"},
		{"amqp.confirm_timeout", "5s"},
		{"amqp.heartbeat", "10s"},
		{"amqp.consumer_timeout", "30m0s"},
		{"amqp.tls.ca_file", `""`},
		{"amqp.tls.cert_file", `""`},
		{"amqp.tls.key_file", `""`},
		{"amqp.tls.server_name", `""`},
		{"tls.cert_file", `""`},
		{"tls.key_file", `""`},
		{"tls.client_ca_file", `""`},
		{"limits.max_connections", "4096"},
		{"limits.max_item_size", "524288"},
		{"limits.idle_timeout", "0s"},
		{"limits.read_timeout", "30s"},
		{"limits.max_reservations_per_connection", "64"},
		{"limits.max_queues", "10000"},
		{"limits.max_pending_bytes", "1048576"},
		{"auth.mode", "broker"},
		{"auth.anonymous", "deny"},
		{"auth.vhost", `"edge hosts"`},
		{"auth.idle_close", "1m0s"},
		{"auth.max_users", "100"},
		{"defaults.reservation_timeout", "5m0s"},
		{"defaults.queue_type", "classic"},
		{"defaults.ack", "manual"},
		{"auto_declare.enabled", "true"},
		{"auto_declare.keys", "jobs.*,tmp.#"},
		{"exchanges.logs.type", "topic"},
		{"exchanges.logs.keys", "logs.#,audit"},
		{"queues.errors.type", "quorum"},
		{"queues.errors.ack", "manual"},
		{"queues.errors.reservation_timeout", "5m0s"},
		{"queues.errors.max_length", "0"},
		{"queues.errors.overflow", "reject-publish"},
		{"queues.errors.message_ttl", "1.5s"},
		{"queues.errors.dead_letter_exchange", `""`},
		{"queues.errors.delivery_limit", "3"},
		{"queues.errors.bindings.0.exchange", "logs"},
		{"queues.errors.bindings.0.routing_key", "logs.*.error"},
		{"queues.errors.bindings.1.exchange", "logs"},
		{"queues.errors.bindings.1.routing_key", "#"},
	}
	got := c.Settings()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Settings() mismatch")
		for i := range max(len(got), len(want)) {
			var g, w Setting
			if i < len(got) {
				g = got[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if g != w {
				t.Errorf("row %d: got %v, want %v", i, g, w)
			}
		}
	}
	if again := c.Settings(); !reflect.DeepEqual(again, got) {
		t.Error("Settings() is not deterministic")
	}
}

// Every row of every test config is one STAT token pair and leaks no password.
func TestSettingsAreTokens(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		c, err := LoadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, s := range c.Settings() {
			if strings.ContainsAny(s.Name, " \t\r\n") || s.Value == "" || strings.ContainsAny(s.Value, " \t\r\n") {
				t.Errorf("%s: row %q %q is not two tokens", f, s.Name, s.Value)
			}
			if seen[s.Name] {
				t.Errorf("%s: row %q repeated", f, s.Name)
			}
			seen[s.Name] = true
			for _, secret := range []string{"s3cret", "guest:guest"} {
				if strings.Contains(s.Value, secret) {
					t.Errorf("%s: %s = %s leaks a password", f, s.Name, s.Value)
				}
			}
		}
	}
}

// Every key of the schema has its row, so a key added to Config cannot be
// forgotten in `stats settings`.
func TestSettingsListEveryKey(t *testing.T) {
	c, err := Load([]byte("exchanges: [{name: x, type: topic}]\nqueues: [{name: q, bindings: [{exchange: x}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, s := range c.Settings() {
		rows[s.Name] = true
	}
	// A list item's row names it by its name (queues.q.type), or by its
	// position where it has none (bindings.0.exchange).
	item := map[string]string{"exchanges": "x", "queues": "q", "bindings": "0"}
	for _, k := range schemaKeys() {
		if !isLeaf(k.typ) && !(k.typ.Kind() == reflect.Slice && isLeaf(k.typ.Elem())) {
			continue // a section or a list of sections: its leaves have rows
		}
		var segs []string
		for i, seg := range k.parent {
			if seg == "[]" {
				seg = item[k.parent[i-1]]
			}
			segs = append(segs, seg)
		}
		if n := len(k.parent); k.key == "name" && n >= 2 && item[k.parent[n-2]] != "0" {
			continue // the row names carry it
		}
		if name := strings.Join(append(segs, k.key), "."); !rows[name] {
			t.Errorf("Settings() has no row %s", name)
		}
	}
}
