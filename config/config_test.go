package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// want returns Default() changed by edit, for comparing with a loaded file.
func want(edit func(c *Config)) *Config {
	c := Default()
	edit(c)
	return c
}

func patterns(ss ...string) []Pattern {
	ps := make([]Pattern, len(ss))
	for i, s := range ss {
		ps[i] = MustParsePattern(s)
	}
	return ps
}

// equalConfig compares everything but the lookup index, which is derived.
func equalConfig(t *testing.T, got, want *Config) {
	t.Helper()
	g, w := *got, *want
	g.idx, w.idx = index{}, index{}
	if !reflect.DeepEqual(g, w) {
		gj, _ := json.MarshalIndent(g, "", "  ")
		wj, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("config mismatch\n got: %s\nwant: %s", gj, wj)
	}
}

// Patterns print through String in the JSON diff above.
func (p Pattern) MarshalJSON() ([]byte, error) { return json.Marshal(p.raw) }

func TestLoadGood(t *testing.T) {
	tests := []struct {
		file string
		want *Config
	}{
		{"empty.good.yml", Default()},
		{"comments_only.good.yml", Default()},
		{"spec_example.good.yml", want(func(c *Config) {
			c.Exchanges = []Exchange{
				{Name: "orders", Type: ExchangeFanout, Keys: patterns("orders"), Line: 23},
				{Name: "logs", Type: ExchangeTopic, Keys: patterns("logs.#"), Line: 26},
			}
			c.Queues = []Queue{
				{
					Name: "billing", Type: QueueClassic, Ack: AckManual,
					Bindings:           []Binding{{Exchange: "orders", RoutingKey: ""}},
					ReservationTimeout: 5 * time.Minute, Overflow: OverflowRejectPublish, Line: 30,
				},
				{
					Name: "errors", Type: QueueClassic, Ack: AckManual,
					Bindings:           []Binding{{Exchange: "logs", RoutingKey: "logs.*.error"}},
					ReservationTimeout: 30 * time.Second, MaxLength: 100000,
					Overflow: OverflowRejectPublish, Line: 33,
				},
			}
		})},
		{"quorum.good.yml", want(func(c *Config) {
			c.Defaults = Defaults{QueueType: QueueQuorum, Ack: AckAuto, ReservationTimeout: 10 * time.Minute}
			c.Exchanges = []Exchange{
				{Name: "jobs", Type: ExchangeDirect, Keys: patterns("jobs.*"), Line: 3},
				{Name: "dead", Type: ExchangeFanout, Line: 6},
			}
			c.Queues = []Queue{
				{
					Name: "jobs.email", Type: QueueQuorum, Ack: AckManual,
					Bindings:           []Binding{{Exchange: "jobs", RoutingKey: "jobs.email"}},
					ReservationTimeout: 10 * time.Minute, MaxLength: 5000, Overflow: OverflowDropHead,
					MessageTTL: 90 * time.Minute, DeadLetterExchange: "dead", DeliveryLimit: 5, Line: 9,
				},
				{
					Name: "jobs.dead", Type: QueueClassic, Ack: AckAuto,
					Bindings:           []Binding{{Exchange: "dead"}},
					ReservationTimeout: 10 * time.Minute, Overflow: OverflowRejectPublish, Line: 18,
				},
				{
					Name: "jobs.inherit", Type: QueueQuorum, Ack: AckAuto,
					Bindings:           []Binding{{Exchange: "jobs", RoutingKey: "jobs.sms"}},
					ReservationTimeout: 10 * time.Minute, Overflow: OverflowRejectPublish, Line: 22,
				},
			}
		})},
		{"size_kib.good.yml", want(func(c *Config) { c.Limits.MaxItemSize = 512 << 10 })},
		{"consumer_timeout_long_jobs.good.yml", want(func(c *Config) {
			c.AMQP.ConsumerTimeout = 2 * time.Hour
			c.Defaults.ReservationTimeout = 90 * time.Minute
		})},
		{"size_mib.good.yml", want(func(c *Config) { c.Limits.MaxItemSize = 16 << 20 })},
		{"size_bytes.good.yml", want(func(c *Config) { c.Limits.MaxItemSize = 1048577 })},
		{"merge.good.yml", want(func(c *Config) {
			c.Queues = []Queue{
				{Name: "a", Type: QueueQuorum, Ack: AckManual, ReservationTimeout: time.Minute, DeliveryLimit: 3, Overflow: OverflowRejectPublish, Line: 2},
				{Name: "b", Type: QueueQuorum, Ack: AckManual, ReservationTimeout: time.Minute, DeliveryLimit: 7, Overflow: OverflowRejectPublish, Line: 7},
			}
		})},
		{"defaults_last.good.yml", want(func(c *Config) {
			c.Defaults = Defaults{QueueType: QueueQuorum, Ack: AckAuto, ReservationTimeout: 29 * time.Minute}
			c.Queues = []Queue{{
				Name: "q1", Type: QueueQuorum, Ack: AckAuto, ReservationTimeout: 29 * time.Minute,
				Overflow: OverflowRejectPublish, Line: 3,
			}}
		})},
		{"cluster.good.yml", want(func(c *Config) {
			c.Listen = ":11311"
			c.MetricsListen = ""
			c.AMQP = AMQP{
				URLs: []URL{
					"amqps://app:s3cret@rabbit-1.example.com:5671/prod",
					"amqps://app:s3cret@rabbit-2.example.com:5671/prod",
				},
				ConnectionName:     "mcbridge-eu",
				ConsumeConnections: 4,
				ConfirmTimeout:     250 * time.Millisecond,
				Heartbeat:          0,
				ConsumerTimeout:    DefaultConsumerTimeout,
				TLS: ClientTLS{
					CAFile: filepath.Join("testdata", "ca.pem"), CertFile: "/etc/mcbridge/client.pem",
					KeyFile: filepath.Join("testdata", "client.key"), ServerName: "rabbit.example.com",
				},
			}
			c.TLS = ServerTLS{
				CertFile:     filepath.Join("testdata", "server.pem"),
				KeyFile:      filepath.Join("testdata", "server.key"),
				ClientCAFile: filepath.Join("testdata", "clients.pem"),
			}
			c.Limits = Limits{
				MaxConnections: 10, MaxItemSize: 1 << 20, IdleTimeout: 10 * time.Minute, MaxReservationsPerConnection: 1,
				MaxQueues: 500, MaxPendingBytes: 64 << 20,
			}
			c.Auth = Auth{Mode: AuthBroker, Anonymous: AnonymousAllow, VHost: "prod", IdleClose: 5 * time.Minute, MaxUsers: 20}
			c.AutoDeclare = AutoDeclare{Enabled: false, Keys: patterns("jobs.*", "tmp.#")}
			c.Exchanges = []Exchange{{Name: "events", Type: ExchangeTopic, Keys: patterns("events.#", "audit"), Line: 30}}
			c.Queues = []Queue{{
				Name: "all-events", Type: QueueClassic, Ack: AckManual, ReservationTimeout: 5 * time.Minute,
				Bindings: []Binding{{Exchange: "events", RoutingKey: "#"}, {Exchange: "events", RoutingKey: "audit"}},
				Overflow: OverflowRejectPublish, Line: 34,
			}}
		})},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			got, err := LoadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			equalConfig(t, got, tt.want)
		})
	}
	files, err := filepath.Glob("testdata/*.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no row in TestLoadGood", f)
		}
	}
}

func TestLoadBad(t *testing.T) {
	tests := []struct {
		file    string
		wantErr string // the whole message, after "testdata/<file>:"
	}{
		{"ack_invalid.bad.yml", `2: defaults.ack "yes" is not one of manual, auto`},
		{"amqp_key_too_shallow.bad.yml", `3: invalid YAML: did not find expected key: "confirm_timeout:" is probably indented wrong; the keys of one mapping start in the same column`},
		{"amqp_tls_cert_without_key.bad.yml", `4: amqp.tls.cert_file is set without amqp.tls.key_file; a client certificate needs both`},
		{"amqp_tls_without_amqps.bad.yml", `4: amqp.tls is set but no amqp.urls entry uses amqps://, so it would be ignored`},
		{"auth_anonymous_invalid.bad.yml", `3: auth.anonymous "maybe" is not one of deny, allow`},
		{"auth_anonymous_without_broker.bad.yml", `2: auth.anonymous allow has no effect with auth.mode none, where every client acts as the amqp.urls user; set auth.mode: broker to make clients log in`},
		{"auth_idle_close_zero.bad.yml", `2: auth.idle_close 0s must be greater than 0`},
		{"auth_max_users_zero.bad.yml", `2: auth.max_users 0 must be at least 1`},
		{"auth_mode_invalid.bad.yml", `2: auth.mode "ldap" is not one of none, broker`},
		{"auth_not_mapping.bad.yml", `1: auth must be a mapping, got the value "broker"`},
		{"auth_unknown_key.bad.yml", `1: unknown key "users" in auth; known keys: mode, anonymous, vhost, idle_close, max_users`},
		{"auth_vhost_control.bad.yml", `2: auth.vhost "prod\n" contains a control character`},
		{"auth_vhost_empty.bad.yml", `3: auth.vhost "" must not be empty; RabbitMQ's default vhost is "/"`},
		{"auth_vhost_not_indented.bad.yml", `3: unknown top-level key "vhost"; did you mean auth.vhost? (indent it under auth:)`},
		{"auto_declare_enabled_type.bad.yml", `2: auto_declare.enabled "maybe" is not a boolean; want true or false`},
		{"auto_declare_key_empty.bad.yml", `2: auto_declare.keys[0] "" matches no key: memcache keys are never empty`},
		{"auto_declare_key_pattern.bad.yml", `2: auto_declare.keys[1] "tmp#" is not a valid pattern: word "tmp#" mixes a wildcard with other characters; "*" and "#" must be whole words between dots`},
		{"auto_declare_key_slash.bad.yml", `2: auto_declare.keys[0] "jobs/open" contains "/", which ends the queue name in a key (kestrel options follow it), so no key would match`},
		{"binding_direct_wildcard.bad.yml", `7: queues[0] "billing": bindings[0].routing_key "jobs.*" has a wildcard, but direct exchange "jobs" matches routing keys exactly; use a topic exchange for patterns`},
		{"binding_duplicate.bad.yml", `7: queues[0] "errors": bindings[1] repeats bindings[0] (exchange "logs", routing key "#")`},
		{"binding_fanout_routing_key.bad.yml", `7: queues[0] "billing": bindings[0].routing_key "orders.eu" has no effect: fanout exchange "orders" ignores routing keys`},
		{"binding_missing_exchange.bad.yml", `4: queues[0] "billing": bindings[0]: exchange is required, e.g. {exchange: orders}`},
		{"binding_topic_pattern.bad.yml", `6: queues[0] "errors": bindings[0].routing_key "logs.*error" is not a valid pattern: word "*error" mixes a wildcard with other characters; "*" and "#" must be whole words between dots`},
		{"binding_unknown_exchange.bad.yml", `6: queues[0] "billing": bindings[0]: exchange "order" is not declared in exchanges`},
		{"bindings_flush_left.bad.yml", `4: unknown top-level key "bindings"; did you mean queues[0].bindings? (indent it to line up with the keys of queues[0])`},
		{"bindings_too_shallow.bad.yml", `6: invalid YAML: did not find expected '-' indicator: "bindings:" is probably indented wrong; the keys of one mapping start in the same column`},
		{"boolean_yes.bad.yml", `2: auto_declare.enabled "yes" is not a boolean; want true or false`},
		{"confirm_timeout_no_unit.bad.yml", `2: amqp.confirm_timeout "5" is not a duration; use Go syntax such as 500ms, 30s, 5m or 1h30m`},
		{"confirm_timeout_zero.bad.yml", `2: amqp.confirm_timeout 0s must be greater than 0`},
		{"consume_connections_zero.bad.yml", `2: amqp.consume_connections 0 must be at least 1`},
		{"dead_letter_exchange_space.bad.yml", `3: queues[0] "jobs": dead_letter_exchange "dead letters" contains ' '; whitespace and control characters are not allowed`},
		{"delivery_limit_classic.bad.yml", `13: queues[1] "errors": delivery_limit 5 is only valid on quorum queues`},
		{"delivery_limit_default_classic.bad.yml", `3: queues[0] "errors": delivery_limit 5 is only valid on quorum queues`},
		{"delivery_limit_negative.bad.yml", `4: queues[0] "jobs": delivery_limit -1 must not be negative`},
		{"exchange_duplicate.bad.yml", `4: exchanges[1]: name "orders" is already used by exchanges[0] (line 2)`},
		{"exchange_key_pattern.bad.yml", `4: exchanges[0] "orders": keys[0] "orders.a*b" is not a valid pattern: word "a*b" mixes a wildcard with other characters; "*" and "#" must be whole words between dots`},
		{"exchange_key_shadowed.bad.yml", `7: exchanges[1] "app": key "logs.app" is already routed to exchanges[0] "logs" by its key "logs.#" (the first exchange that matches wins), so nothing would publish here`},
		{"exchange_key_twice.bad.yml", `4: exchanges[0] "logs": key "logs.*" is listed twice`},
		{"exchange_name_missing.bad.yml", `2: exchanges[0]: name is required`},
		{"exchange_name_reserved.bad.yml", `2: exchanges[0]: name "amq.topic" must not start with "amq." (RabbitMQ reserves it)`},
		{"exchange_name_space.bad.yml", `2: exchanges[0]: name "my orders" contains ' '; whitespace and control characters are not allowed`},
		{"exchange_type_invalid.bad.yml", `3: exchanges[0] "orders": type "headers" is not one of fanout, direct, topic`},
		{"exchange_type_missing.bad.yml", `2: exchanges[0] "orders": type is required (fanout, direct or topic)`},
		{"heartbeat_fraction.bad.yml", `2: amqp.heartbeat 1500ms must be whole seconds: AMQP negotiates heartbeats in seconds`},
		{"heartbeat_negative.bad.yml", `2: amqp.heartbeat -10s must not be negative (0 takes the broker's)`},
		{"idle_timeout_negative.bad.yml", `2: limits.idle_timeout -1s must not be negative (0 means no timeout)`},
		{"key_in_other_section.bad.yml", `3: unknown key "max_connections" in amqp; did you mean limits.max_connections? (move it under limits:)`},
		{"keys_not_list.bad.yml", `4: exchanges[0] "orders": keys must be a list, got the value "orders"; write ["orders"] for a list of one`},
		{"list_for_mapping.bad.yml", `2: limits must be a mapping, got a list; remove the "- " in front of its keys`},
		{"listen_invalid.bad.yml", `1: listen "11211" is not a host:port address, e.g. 127.0.0.1:11211 or :11211`},
		{"listen_port_range.bad.yml", `1: listen "127.0.0.1:70000" has port "70000"; want a number from 0 to 65535`},
		{"listen_same_as_metrics.bad.yml", `2: metrics_listen "127.0.0.1:9000" is the same address as listen; the memcache and HTTP servers need a port each`},
		{"max_connections_type.bad.yml", `2: limits.max_connections "lots" is not a whole number`},
		{"max_connections_zero.bad.yml", `2: limits.max_connections 0 must be at least 1`},
		{"max_item_size_above_rabbitmq4.bad.yml", `2: limits.max_item_size 17MiB is above 16MiB, the largest message RabbitMQ 4.x accepts by default (max_message_size); a larger one would make the broker close the publish channel that all clients share`},
		{"max_item_size_fraction.bad.yml", `2: limits.max_item_size "1.5MiB" is not a whole number; write 1536KiB rather than 1.5MiB`},
		{"max_item_size_too_large.bad.yml", `2: limits.max_item_size 1 GiB is above 16MiB, the largest message RabbitMQ 4.x accepts by default (max_message_size); a larger one would make the broker close the publish channel that all clients share`},
		{"max_item_size_unit.bad.yml", `2: limits.max_item_size "2MB" has unknown unit "MB"; use bytes or KiB, MiB, GiB (1024-based)`},
		{"max_item_size_zero.bad.yml", `2: limits.max_item_size 0 must be greater than 0`},
		{"max_length_negative.bad.yml", `3: queues[0] "jobs": max_length -5 must not be negative`},
		{"max_pending_bytes_below_item_size.bad.yml", `3: limits.max_pending_bytes 1MiB is below limits.max_item_size (2MiB): a value of the largest size must fit`},
		{"max_queues_zero.bad.yml", `2: limits.max_queues 0 must be at least 1 (auto_declare: {enabled: false} stops auto-declaring)`},
		{"max_reservations_zero.bad.yml", `2: limits.max_reservations_per_connection 0 must be at least 1`},
		{"merge_not_mapping.bad.yml", `2: merge key << in queues[0] "jobs" must refer to a mapping`},
		{"message_ttl_fraction.bad.yml", `3: queues[0] "jobs": message_ttl 1500us must be whole milliseconds: RabbitMQ's x-message-ttl counts milliseconds`},
		{"message_ttl_negative.bad.yml", `3: queues[0] "jobs": message_ttl -1m must not be negative (0 means no TTL)`},
		{"metrics_listen_null.bad.yml", `1: metrics_listen has no value; write metrics_listen: "" to disable it, or remove the key for the default 127.0.0.1:9150`},
		{"not_a_mapping.bad.yml", `1: the config must be a mapping of keys to values, got a list`},
		{"null_value.bad.yml", `2: amqp.confirm_timeout has no value; remove the key to use the default`},
		{"number_octal.bad.yml", `2: limits.max_connections "010" starts with 0, which YAML reads as octal; write the number without leading zeros`},
		{"number_quoted.bad.yml", `2: limits.max_connections "10" is quoted; write the number without quotes`},
		{"overflow_invalid.bad.yml", `3: queues[0] "jobs": overflow "reject-publish-dlx" is not one of reject-publish, drop-head`},
		{"queue_duplicate.bad.yml", `4: queues[2]: name "jobs" is already used by queues[0] (line 2)`},
		{"queue_key_too_deep.bad.yml", `3: invalid YAML: mapping values are not allowed in this context: "type:" is indented deeper than the line above; the keys of one mapping start in the same column`},
		{"queue_key_too_shallow.bad.yml", `3: invalid YAML: did not find expected '-' indicator: "type:" is probably indented wrong; the keys of one mapping start in the same column`},
		{"queue_name_missing.bad.yml", `2: queues[0]: name is required`},
		{"queue_name_reserved.bad.yml", `2: queues[0]: name "amq.gen-1" must not start with "amq." (RabbitMQ reserves it)`},
		{"queue_name_slash.bad.yml", `2: queues[0]: name "jobs/open" contains "/", which starts kestrel options in a key, so no client could address the queue`},
		{"queue_name_too_long.bad.yml", `2: queues[0]: name "` + strings.Repeat("q", 251) + `" is 251 bytes long; the limit is 250`},
		{"queue_name_whitespace.bad.yml", `2: queues[0]: name "jobs\tlow" contains '\t'; whitespace and control characters are not allowed`},
		{"queue_not_mapping.bad.yml", `2: queues[0] must be a mapping, got the value "jobs"`},
		{"queue_reservation_timeout_zero.bad.yml", `3: queues[0] "jobs": reservation_timeout 0s must be greater than 0`},
		{"queue_reservation_timeout_too_long.bad.yml", `3: queues[0] "jobs": reservation_timeout 1h must be at most 29m0s: leases end 1m0s before amqp.consumer_timeout (30m0s), or the broker closes the consume channel`},
		{"queue_type_in_binding.bad.yml", `6: unknown key "type" in queues[0] "errors": bindings[0]; did you mean queues[0].type? (outdent it to line up with bindings:)`},
		{"queue_type_invalid.bad.yml", `2: defaults.queue_type "stream" is not one of classic, quorum`},
		{"read_timeout_negative.bad.yml", `2: limits.read_timeout -30s must not be negative (0 means no timeout)`},
		{"repeated_key.bad.yml", `3: key "max_connections" is repeated in limits (first at line 2)`},
		{"consumer_timeout_too_short.bad.yml", `2: amqp.consumer_timeout 90s must be at least 2m0s: leases end 1m0s before it`},
		{"reservation_timeout_too_long.bad.yml", `2: defaults.reservation_timeout 30m must be at most 29m0s: leases end 1m0s before amqp.consumer_timeout (30m0s), or the broker closes the consume channel`},
		{"reservation_timeout_zero.bad.yml", `2: defaults.reservation_timeout 0s must be greater than 0`},
		{"routing_key_too_shallow.bad.yml", `6: unknown key "routing_key" in queues[0] "errors"; did you mean queues[0].bindings[0].routing_key? (indent it to line up with the keys of queues[0].bindings[0])`},
		{"section_not_mapping.bad.yml", `1: limits must be a mapping, got the value "10"`},
		{"section_too_deep.bad.yml", `3: unknown key "limits" in amqp; did you mean the top-level key "limits"? (outdent it to line up with amqp:)`},
		{"syntax.bad.yml", `2: invalid YAML: did not find expected ',' or ']'`},
		{"tab_indent.bad.yml", `2: invalid YAML: a tab indents this line; YAML indents with spaces only`},
		{"tab_indent_later.bad.yml", `3: invalid YAML: a tab indents this line; YAML indents with spaces only`},
		{"tls_cert_without_key.bad.yml", `2: tls.cert_file is set without tls.key_file; TLS on the memcache port needs both`},
		{"tls_client_ca_without_cert.bad.yml", `2: tls.client_ca_file is set but TLS is off; it needs tls.cert_file and tls.key_file`},
		{"tls_key_without_cert.bad.yml", `2: tls.key_file is set without tls.cert_file; TLS on the memcache port needs both`},
		{"two_documents.bad.yml", `2: a second YAML document starts here; mcbridge reads one`},
		{"unknown_key_binding.bad.yml", `4: unknown key "routingkey" in queues[0] "jobs": bindings[0]; did you mean "routing_key"?`},
		{"unknown_key_limits.bad.yml", `3: unknown key "foo" in limits; known keys: max_connections, max_item_size, idle_timeout, read_timeout, max_reservations_per_connection, max_queues, max_pending_bytes`},
		{"unknown_key_queue.bad.yml", `3: unknown key "durable" in queues[0] "jobs"; known keys: name, type, bindings, ack, reservation_timeout, max_length, overflow, message_ttl, dead_letter_exchange, delivery_limit`},
		{"unknown_key_top.bad.yml", `2: unknown top-level key "lisen"; did you mean "listen"?`},
		{"url_duplicate.bad.yml", `4: amqp.urls[1] "amqp://a:xxxxx@h1/" is listed twice (first at line 3)`},
		{"url_scheme.bad.yml", `2: amqp.urls[0] "http://guest:xxxxx@localhost:5672/" has scheme "http"; want amqp or amqps`},
		{"url_unparsable.bad.yml", `3: amqp.urls[0] "amqp://guest:xxxxx@localhost:56x72/" is not a valid URL: invalid port ":56x72" after host`},
		{"urls_empty.bad.yml", `2: amqp.urls must list at least one broker URL (remove the key for the default amqp://guest:xxxxx@127.0.0.1:5672/)`},
		{"urls_mapping.bad.yml", `2: amqp.urls must be a list, got a mapping`},
		{"urls_not_indented.bad.yml", `3: unknown top-level key "urls"; did you mean amqp.urls? (indent it under amqp:)`},
		{"urls_not_list.bad.yml", `2: amqp.urls must be a list, got the value "amqp://guest:xxxxx@localhost/"; write ["amqp://guest:xxxxx@localhost/"] for a list of one`},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			c, err := LoadFile(path)
			if err == nil {
				t.Fatalf("LoadFile succeeded, want error %q", tt.wantErr)
			}
			if c != nil {
				t.Errorf("LoadFile returned a config with its error")
			}
			if want := path + ":" + tt.wantErr; err.Error() != want {
				t.Errorf("error\n got: %s\nwant: %s", err, want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Line == 0 || ce.File != path {
				t.Errorf("error %#v is not an *Error with a file and a line", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks a password: %s", err)
			}
		})
	}
	files, err := filepath.Glob("testdata/*.bad.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no row in TestLoadBad", f)
		}
	}
}

func TestLoadErrorFormat(t *testing.T) {
	_, err := Load([]byte("limits:\n  max_connections: lots\n"))
	if got, want := fmt.Sprint(err), `line 2: limits.max_connections "lots" is not a whole number`; got != want {
		t.Errorf("Load error = %q, want %q", got, want)
	}
	_, err = LoadFile(filepath.Join(t.TempDir(), "missing.yml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadFile(missing) = %v, want fs.ErrNotExist", err)
	}
}

// Errors are deterministic: the same input always reports the same problem,
// whatever map iteration order does.
func TestLoadErrorDeterministic(t *testing.T) {
	data := []byte("queues:\n  - {name: a, delivery_limit: 1}\n  - {name: b, bindings: [{exchange: nope}]}\n")
	_, first := Load(data)
	for range 50 {
		if _, err := Load(data); fmt.Sprint(err) != fmt.Sprint(first) {
			t.Fatalf("error changed from %v to %v", first, err)
		}
	}
}

func TestDefaultIsLoadEmpty(t *testing.T) {
	for _, data := range []string{"", "\n", "# nothing\n", "---\n", "~\n", "{}\n"} {
		got, err := Load([]byte(data))
		if err != nil {
			t.Fatalf("Load(%q): %v", data, err)
		}
		if !reflect.DeepEqual(got, Default()) {
			t.Errorf("Load(%q) differs from Default()", data)
		}
	}
	d := Default()
	if d.Listen != "127.0.0.1:11211" || d.MetricsListen != "127.0.0.1:9150" ||
		len(d.AMQP.URLs) != 1 || d.AMQP.URLs[0].Raw() != "amqp://guest:guest@127.0.0.1:5672/" ||
		!d.AutoDeclare.Enabled || len(d.AutoDeclare.Keys) != 1 || d.AutoDeclare.Keys[0].String() != "#" ||
		d.Limits.MaxItemSize != 1<<20 || d.Defaults.ReservationTimeout != 5*time.Minute || d.TLS.Enabled() {
		t.Errorf("Default() = %+v, not the SPEC's zero-config defaults", d)
	}
	// Each call is independent: no caller can change another's defaults.
	d.AMQP.URLs[0] = "amqp://other/"
	d.AutoDeclare.Keys[0] = MustParsePattern("x")
	if e := Default(); e.AMQP.URLs[0] != DefaultAMQPURL || e.AutoDeclare.Keys[0].String() != "#" {
		t.Errorf("Default() shares slices between calls")
	}
}

func TestMetricsListenDisabled(t *testing.T) {
	c, err := Load([]byte(`metrics_listen: ""`))
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsListen != "" {
		t.Errorf("MetricsListen = %q, want disabled", c.MetricsListen)
	}
}

func TestLoadFileKeepsAbsolutePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mcbridge.yml")
	data := "tls: {cert_file: /etc/ssl/a.pem, key_file: a.key}\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.CertFile != "/etc/ssl/a.pem" || c.TLS.KeyFile != filepath.Join(dir, "a.key") || !c.TLS.Enabled() {
		t.Errorf("TLS = %+v", c.TLS)
	}
	// Load has no file to be relative to and keeps paths as written.
	c, err = Load([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.KeyFile != "a.key" {
		t.Errorf("Load changed key_file to %q", c.TLS.KeyFile)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "1048576", want: 1 << 20},
		{in: "0", want: 0},
		{in: "100B", want: 100},
		{in: "512KiB", want: 512 << 10},
		{in: "1MiB", want: 1 << 20},
		{in: "1 MiB", want: 1 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "-1KiB", want: -1024},
		{in: "2MB", wantErr: `has unknown unit "MB"`},
		{in: "2kib", wantErr: `has unknown unit "kib"`},
		{in: "1.5MiB", wantErr: "is not a whole number"},
		{in: "MiB", wantErr: "is not a size"},
		{in: "", wantErr: "is not a size"},
		{in: "99999999999999999999", wantErr: "is too large"},
		{in: "9999999999999GiB", wantErr: "is too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, msg := parseSize(tt.in)
			if tt.wantErr != "" {
				if !strings.Contains(msg, tt.wantErr) {
					t.Errorf("parseSize(%q) = %d, %q; want error containing %q", tt.in, got, msg, tt.wantErr)
				}
				return
			}
			if msg != "" || got != tt.want {
				t.Errorf("parseSize(%q) = %d, %q; want %d", tt.in, got, msg, tt.want)
			}
		})
	}
}

func TestLookups(t *testing.T) {
	c, err := Load([]byte(`
auto_declare: {keys: ["jobs.*", "orders.#", "x"]}
exchanges:
  - {name: eu, type: direct, keys: ["orders.eu.*"]}
  - {name: orders, type: topic, keys: ["orders.#"]}
  - {name: audit, type: fanout, keys: ["audit"]}
queues:
  - {name: billing, bindings: [{exchange: orders}]}
  - {name: x}
`))
	if err != nil {
		t.Fatal(err)
	}
	if q, ok := c.Queue("billing"); !ok || q.Name != "billing" || q != &c.Queues[0] {
		t.Errorf("Queue(billing) = %v, %v", q, ok)
	}
	if q, ok := c.Queue("nope"); ok || q != nil {
		t.Errorf("Queue(nope) = %v, %v", q, ok)
	}
	if x, ok := c.Exchange("audit"); !ok || x.Type != ExchangeFanout {
		t.Errorf("Exchange(audit) = %v, %v", x, ok)
	}
	if _, ok := c.Exchange("billing"); ok {
		t.Errorf("Exchange(billing) found a queue")
	}
	exchangeFor := []struct{ key, want string }{
		{"orders.eu.1", "eu"}, // first match in YAML order wins over the later catch-all
		{"orders.us.1", "orders"},
		{"orders", "orders"},
		{"audit", "audit"},
		{"audit.x", ""},
		{"jobs.a", ""},
	}
	for _, tt := range exchangeFor {
		x, ok := c.ExchangeFor(tt.key)
		if got := ""; ok {
			got = x.Name
			if got != tt.want {
				t.Errorf("ExchangeFor(%q) = %q, want %q", tt.key, got, tt.want)
			}
		} else if tt.want != "" {
			t.Errorf("ExchangeFor(%q) found nothing, want %q", tt.key, tt.want)
		}
	}
	autoDeclarable := []struct {
		key  string
		want bool
	}{
		{"jobs.a", true},
		{"jobs", false},       // no auto_declare pattern matches
		{"jobs.a.b", false},   // "*" is one word
		{"orders.new", false}, // an exchange takes every set of it
		{"x", true},
		{"", false},
		{"amq.x", false},
	}
	for _, tt := range autoDeclarable {
		if got := c.AutoDeclarable(tt.key); got != tt.want {
			t.Errorf("AutoDeclarable(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
	c.AutoDeclare.Enabled = false
	if c.AutoDeclarable("jobs.a") {
		t.Errorf("AutoDeclarable with auto_declare disabled")
	}
	d := Default()
	for _, key := range []string{"jobs", "a.b.c", "orders"} {
		if !d.AutoDeclarable(key) {
			t.Errorf("Default().AutoDeclarable(%q) = false; zero config must auto-declare", key)
		}
	}
}

// The index is built by Default and Load; a Config built by hand has none
// and finds nothing, rather than failing.
func TestLookupsZeroConfig(t *testing.T) {
	var zero Config
	if _, ok := zero.Queue("a"); ok {
		t.Error("zero Config has queues")
	}
	if _, ok := zero.Exchange("a"); ok {
		t.Error("zero Config has exchanges")
	}
	if zero.AutoDeclarable("a") {
		t.Error("zero Config auto-declares")
	}
}

func TestURLRedaction(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"amqp://guest:hunter2@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"amqps://app:p%40ss@h/vhost", "amqps://app:xxxxx@h/vhost"},
		{"amqp://app:p@ss@h/", "amqp://app:xxxxx@h/"},
		{"amqp://onlyuser@h/", "amqp://onlyuser@h/"},
		{"amqp://h/", "amqp://h/"},
		{"amqp://u:hunter2@h:bad/", "amqp://u:xxxxx@h:bad/"},           // unparsable
		{"guest:hunter2@localhost:5672", "guest:xxxxx@localhost:5672"}, // no scheme
		{":hunter2@://@", ":xxxxx@"},                                   // "://" after the password (found by FuzzLoad)
	}
	for _, tt := range tests {
		u := URL(tt.raw)
		if got := u.Redacted(); got != tt.want {
			t.Errorf("URL(%q).Redacted() = %q, want %q", tt.raw, got, tt.want)
		}
		for _, s := range []string{u.String(), fmt.Sprint(u), fmt.Sprintf("%v %s %q %#v %+v", u, u, u, u, []URL{u})} {
			if strings.Contains(s, "hunter2") {
				t.Errorf("printing %q leaks the password: %s", tt.raw, s)
			}
		}
		j, err := json.Marshal(struct{ U []URL }{[]URL{u}})
		if err != nil || strings.Contains(string(j), "hunter2") {
			t.Errorf("json.Marshal = %s, %v", j, err)
		}
		if u.Raw() != tt.raw {
			t.Errorf("Raw() = %q, want %q", u.Raw(), tt.raw)
		}
	}
}

// Any input either loads or yields an *Error; nothing panics.
func FuzzLoad(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yml")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Load(data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not an *Error", err)
			}
			// The walk checks everything the YAML library would refuse,
			// so the library's own messages never reach the operator.
			if strings.HasPrefix(ce.Msg, "invalid value:") {
				t.Fatalf("walk and decode disagree: %v", err)
			}
			if passwordsOnlyInUserinfo(string(data)) && strings.Contains(err.Error(), password) {
				t.Fatalf("error leaks a password: %v", err)
			}
			return
		}
		for _, s := range c.Settings() {
			if passwordsOnlyInUserinfo(string(data)) && strings.Contains(s.Value, password) {
				t.Fatalf("%s = %s leaks a password", s.Name, s.Value)
			}
		}
	})
}

// Aliases may point at their own ancestors; loading must fail cleanly, not
// recurse forever (found by FuzzLoad, see testdata/fuzz).
func TestLoadAliasCycles(t *testing.T) {
	tests := []struct{ data, wantErr string }{
		{"queues:\n  - &first\n    <<: *first\n    name: b\n", `line 3: merge key << in queues[0] "b" merges a mapping into itself`},
		{"limits: &x\n  <<: *x\n", "line 2: merge key << in limits merges a mapping into itself"},
		{"queues: &q\n  - *q\n", "line 1: queues[0] must be a mapping, got a list"},
		{"amqp: &a\n  tls: *a\n", `line 2: unknown key "tls" in amqp.tls; did you mean amqp.tls? (outdent it to line up with tls:)`},
	}
	for _, tt := range tests {
		if _, err := Load([]byte(tt.data)); fmt.Sprint(err) != tt.wantErr {
			t.Errorf("Load(%q) = %v, want %s", tt.data, err, tt.wantErr)
		}
	}
}

// Nested merge keys and aliases cannot make loading take exponential time:
// eight levels of eight merges would expand to 8^8 mappings.
func TestMergeBlowUp(t *testing.T) {
	var b strings.Builder
	b.WriteString("queues:\n  - &a0 {name: q0, type: quorum}\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "  - &a%d {name: q%d, <<: [", i, i)
		for j := range 8 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]}\n")
	}
	_, err := Load([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "expand to more than 10000 values") {
		t.Errorf("Load = %v, want the expansion limit", err)
	}
}

// A mis-indented key is reported on its own line, however far above it its
// block began (the YAML library names the block's first line).
func TestSyntaxErrorOnOffendingLine(t *testing.T) {
	var b strings.Builder
	b.WriteString("queues:\n")
	for i := range 500 {
		fmt.Fprintf(&b, "  - name: q%d\n    type: quorum\n", i)
	}
	b.WriteString("  - name: last\n  type: quorum\n") // line 1003
	_, err := Load([]byte(b.String()))
	want := `line 1003: invalid YAML: did not find expected '-' indicator: "type:" is probably indented wrong; the keys of one mapping start in the same column`
	if fmt.Sprint(err) != want {
		t.Errorf("Load = %v\nwant %s", err, want)
	}
}
