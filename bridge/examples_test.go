package bridge

import (
	"path/filepath"
	"testing"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// TestExampleConfigs: every shipped example passes validation and starts
// against a real broker, the private test node in place of the example's
// amqp.urls (its topology is accepted).
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../examples/configs/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := config.LoadFile(f)
			if err != nil {
				t.Fatalf("check-config: %v", err)
			}
			// The examples name objects ("jobs", "orders") that other
			// tests of this binary might use: remove them again.
			for _, q := range cfg.Queues {
				t.Cleanup(func() { testbroker.Delete(t, q.Name) })
			}
			for _, ex := range cfg.Exchanges {
				t.Cleanup(func() { testbroker.Delete(t, ex.Name) })
			}
			cfg.Listen = "127.0.0.1:0"
			cfg.MetricsListen = ""
			cfg.AMQP.URLs = []config.URL{config.URL(testbroker.URL)}
			g := startGateway(t, cfg)
			if err := g.broker.Ready(); err != nil {
				t.Fatalf("not ready: %v", err)
			}
			g.dial().synced()
		})
	}
}
