package clients

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// The libmemcached tools open one connection per run, and a reservation
// goes back to its queue when its connection closes: memccat consumes only
// from `ack: auto` queues (destructive get, as memcacheq).

const queueSh = "examples/cli/queue.sh"

func autoAckGateway(t *testing.T) *testgateway.Gateway {
	cfg := testgateway.Config()
	cfg.Defaults.Ack = config.AckAuto
	return testgateway.Start(t, cfg, testgateway.Options{})
}

func TestLibmemcachedTools(t *testing.T) { testCLI(t, nil) }

func TestLibmemcachedToolsBinary(t *testing.T) { testCLI(t, []string{"MEMC_OPTS=--binary"}) }

func testCLI(t *testing.T, env []string) {
	t.Parallel()
	requirePackages(t, "libmemcached-tools")
	g := autoAckGateway(t)
	var opts []string // the same options for direct tool runs
	if len(env) > 0 {
		opts = []string{"--binary"}
	}
	tool := func(name string, args ...string) []string { return append(append([]string{name}, opts...), args...) }

	t.Run("produce_consume_exactly_once", func(t *testing.T) {
		const n = 10
		q := testbroker.Name(t, "jobs")
		stored(t, mustRun(t, 60*time.Second, env, queueSh, "produce", g.Addr, q, "10").stdout, n)
		a := start(t, 60*time.Second, env, queueSh, "consume", g.Addr, q)
		b := start(t, 60*time.Second, env, queueSh, "consume", g.Addr, q)
		ja, _ := jobs(t, a.wait(t).stdout)
		jb, _ := jobs(t, b.wait(t).stdout)
		exactlyOnce(t, append(ja, jb...), n, 1, 0)
		drained(t, q)
	})

	t.Run("flags_round_trip", func(t *testing.T) {
		q := testbroker.Name(t, "flags")
		file := filepath.Join(t.TempDir(), q)
		if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
		mustRun(t, 10*time.Second, nil, tool("memccp", "--servers="+g.Addr, "--flags=42", file)...)
		if flags, body := inspect(t, q); flags != 42 || string(body) != "hello" {
			t.Errorf("broker has flags %d body %q, want 42 %q", flags, body, "hello")
		}
		r := mustRun(t, 10*time.Second, nil, tool("memccat", "--servers="+g.Addr, "--flags", q)...)
		if r.stdout != "42\nhello\n" {
			t.Errorf("memccat --flags printed %q, want %q", r.stdout, "42\nhello\n")
		}
		drained(t, q)
	})

	t.Run("miss_and_delete_miss", func(t *testing.T) {
		q := testbroker.Name(t, "empty")
		if r := run(t, 10*time.Second, nil, tool("memccat", "--servers="+g.Addr, q)...); r.code == 0 || r.stdout != "" {
			t.Errorf("memccat on an empty queue: exit %d, stdout %q; want a failure", r.code, r.stdout)
		}
		if r := run(t, 10*time.Second, nil, tool("memcrm", "--servers="+g.Addr, q)...); r.code == 0 {
			t.Errorf("memcrm without a reservation: exit 0, want a failure (NOT_FOUND)")
		}
	})

	t.Run("two_gateways_in_the_server_list", func(t *testing.T) {
		const n = 5
		g2 := autoAckGateway(t)
		servers := g.Addr + "," + g2.Addr
		var all []job
		for _, hint := range []string{"s1", "s2", "s3"} {
			q := testbroker.Name(t, hint)
			stored(t, mustRun(t, 60*time.Second, env, queueSh, "produce", servers, q, "5").stdout, n)
			got, _ := jobs(t, mustRun(t, 60*time.Second, env, queueSh, "consume", servers, q).stdout)
			all = append(all, got...)
			drained(t, q)
		}
		exactlyOnce(t, all, n, 3, 0)
	})

	t.Run("memcstat", func(t *testing.T) {
		q := testbroker.Name(t, "stat")
		stored(t, mustRun(t, 60*time.Second, env, queueSh, "produce", g.Addr, q, "2").stdout, 2)
		r := run(t, 10*time.Second, env, queueSh, "stats", g.Addr)
		// libmemcached parses the VERSION reply as major.minor.patch and
		// refuses a non-numeric one (or major 0): bridge.Version's
		// default must stay numeric ("1.0.0-dev").
		if r.code != 0 || !strings.Contains(r.stdout, "queue_"+q+"_items: 2") {
			t.Errorf("memcstat: exit %d, want queue_%s_items: 2\nstdout:\n%s\nstderr:\n%s\n"+
				"the version reply is %q; libmemcached needs a numeric major.minor.patch with "+
				"major >= 1 for memcstat and ext-memcached's getVersion/getStats", r.code, q, clip(r.stdout), clip(r.stderr), "VERSION "+bridge.Version)
		}
	})
}

// yamlGateway starts a gateway from YAML (with the private broker's URL).
func yamlGateway(t *testing.T, yaml string) *testgateway.Gateway {
	t.Helper()
	cfg, err := config.Load([]byte(fmt.Sprintf("listen: 127.0.0.1:0\nmetrics_listen: \"\"\namqp:\n  urls: [%q]\n%s", testbroker.URL, yaml)))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return testgateway.Start(t, cfg, testgateway.Options{})
}

// On a manual-ack queue memccat's get reserves a job that goes back when
// memccat exits, so a consume loop would get it forever: queue.sh consume
// refuses such a queue at once, takes nothing, and says why. A queue's own
// ack wins over defaults.ack either way, and with several gateways one that
// runs the queue manual-ack is enough to refuse.
func TestQueueShConsumeRefusesManualAck(t *testing.T) {
	t.Parallel()
	requirePackages(t, "libmemcached-tools")
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			var env []string
			if binary {
				env = []string{"MEMC_OPTS=--binary"}
			}
			autoQ, manualQ := testbroker.Name(t, "yaml-auto"), testbroker.Name(t, "yaml-manual")
			// manualGW: defaults.ack manual, autoQ declared auto.
			manualGW := yamlGateway(t, fmt.Sprintf("queues:\n  - name: %s\n    ack: auto\n", autoQ))
			// autoGW: defaults.ack auto, manualQ declared manual.
			autoGW := yamlGateway(t, fmt.Sprintf("defaults:\n  ack: auto\nqueues:\n  - name: %s\n    ack: manual\n", manualQ))
			tests := []struct {
				name    string
				servers string
				queue   string
				refuse  bool
			}{
				{"auto-declared, default manual", manualGW.Addr, testbroker.Name(t, "auto-declared"), true},
				{"declared manual, default auto", autoGW.Addr, manualQ, true},
				{"declared auto, default manual", manualGW.Addr, autoQ, false},
				{"one of two gateways manual", autoGW.Addr + "," + manualGW.Addr, testbroker.Name(t, "two"), true},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					// memccp hashes the key to one server of the list; so
					// does memccat.
					stored(t, mustRun(t, 60*time.Second, env, queueSh, "produce", tc.servers, tc.queue, "2").stdout, 2)
					r := run(t, 30*time.Second, env, queueSh, "consume", tc.servers, tc.queue)
					if !tc.refuse {
						got, _ := jobs(t, r.stdout)
						if r.code != 0 {
							t.Fatalf("consume: exit %d\n%s", r.code, clip(r.stderr))
						}
						exactlyOnce(t, got, 2, 1, 0)
						drained(t, tc.queue)
						return
					}
					if r.code != 3 || r.stdout != "" || !strings.Contains(r.stderr, "manual-ack queue") || !strings.Contains(r.stderr, "ack: auto") {
						t.Fatalf("consume of a manual-ack queue: exit %d after %v\nstdout:\n%s\nstderr:\n%s\nwant exit 3, nothing consumed and an explanation",
							r.code, r.took, clip(r.stdout), clip(r.stderr))
					}
					if r.took > 10*time.Second {
						t.Errorf("the refusal took %v", r.took)
					}
					// Nothing was taken: both jobs ready, never delivered.
					if n := testbroker.QueueDepth(t, tc.queue); n != 2 {
						t.Fatalf("queue holds %d ready jobs after the refusal, want 2", n)
					}
					ch := testbroker.Channel(t)
					for range 2 {
						d, ok, err := ch.Get(tc.queue, true)
						if err != nil || !ok || d.Redelivered {
							t.Fatalf("basic.get: ok=%v err=%v redelivered=%v, want a job never delivered", ok, err, d.Redelivered)
						}
					}
				})
			}
		})
	}
}
