package queues

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/mcbridge/mcbridge/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func loadConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Load([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

const testYAML = `
defaults: {queue_type: quorum, reservation_timeout: 2m, ack: auto}
exchanges:
  - {name: orders, type: fanout, keys: [orders]}
  - {name: logs, type: topic, keys: ["logs.#"]}
queues:
  - name: billing
    reservation_timeout: 30s
    ack: manual
    bindings: [{exchange: orders}]
`

// A YAML queue keeps its name as metric label and its own settings; any
// other queue shares the "_auto" label and takes the defaults; a kestrel
// fanout child is bound to its parent exchange.
func TestState(t *testing.T) {
	tab := NewTable(loadConfig(t, testYAML), nil)
	billing := tab.State("billing")
	if billing.Label != "billing" || billing.Lease.String() != "30s" || billing.Ack != config.AckManual || billing.passive {
		t.Errorf("billing: label %q lease %v ack %v passive %v", billing.Label, billing.Lease, billing.Ack, billing.passive)
	}
	auto := tab.State("jobs")
	if auto.Label != AutoLabel || auto.Lease.String() != "2m0s" || auto.Ack != config.AckAuto || !auto.passive || !tab.spec(auto).Quorum {
		t.Errorf("jobs: label %q lease %v ack %v passive %v quorum %v", auto.Label, auto.Lease, auto.Ack, auto.passive, tab.spec(auto).Quorum)
	}
	child := tab.State("orders+audit")
	if b := tab.spec(child).Bindings; len(b) != 1 || b[0].Exchange != "orders" {
		t.Errorf("orders+audit bindings %+v, want one to orders", tab.spec(child).Bindings)
	}
	if tab.State("jobs") != auto {
		t.Error("a second State of a queue made a new one")
	}
	var names []string
	for _, q := range tab.List() {
		names = append(names, q.Name)
	}
	if got, want := strings.Join(names, " "), "billing jobs orders+audit"; got != want {
		t.Errorf("List = %s, want %s (sorted)", got, want)
	}
}

// A key that an exchange's keys match goes to that exchange, without any
// broker call.
func TestRouteToExchange(t *testing.T) {
	tab := NewTable(loadConfig(t, testYAML), nil)
	for key, want := range map[string]string{"orders": "orders", "logs.app.error": "logs"} {
		ex, qs, ok, err := tab.Route(context.Background(), key)
		if ex != want || qs != nil || !ok || err != nil {
			t.Errorf("Route(%q) = %q, %v, %v, %v; want exchange %q", key, ex, qs, ok, err, want)
		}
	}
}

func TestTopology(t *testing.T) {
	top := Topology(loadConfig(t, testYAML))
	if len(top.Exchanges) != 2 || top.Exchanges[0].Name != "orders" || top.Exchanges[0].Kind != "fanout" {
		t.Errorf("exchanges %+v", top.Exchanges)
	}
	if len(top.Queues) != 1 || top.Queues[0].Name != "billing" || len(top.Queues[0].Bindings) != 1 || top.Queues[0].Origin == "" {
		t.Errorf("queues %+v", top.Queues)
	}
}
