module github.com/mcbridge/mcbridge

go 1.26.8

require (
	// A real memcache client for tests and the Go example (it has no
	// meta API: workers ack with CompareAndSwap).
	github.com/bradfitz/gomemcache v0.0.0-20250403215159-8d39553ac7cf
	github.com/prometheus/client_golang v1.25.0
	// Parse scrapes in tests (exact counter deltas, PromQL name checks).
	github.com/prometheus/client_model v0.6.3
	github.com/prometheus/common v0.72.0
	// Tests only: Prometheus's own PromQL parser reads the dashboards' and
	// alerts' expressions (cmd/mcbridge/promql_test.go). v0.315.1, not the
	// newer v0.316.0, because v0.316.0 requires newer prometheus/common and
	// x/sys, which would change what the mcbridge binary links.
	github.com/prometheus/prometheus v0.315.1
	// RabbitMQ's own Go client; its opt-in Recovery is not used: a stale
	// delivery tag must never ack another message (see amqp/conn.go).
	github.com/rabbitmq/amqp091-go v1.16.0
	go.uber.org/goleak v1.3.0
	// The maintained continuation of gopkg.in/yaml.v3; config reads its
	// node tree to report every error with its line.
	go.yaml.in/yaml/v3 v3.0.5
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dennwc/varint v1.0.0 // indirect
	github.com/grafana/regexp v0.0.0-20250905093917-f7b3be9d1853 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	go.uber.org/atomic v1.11.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
