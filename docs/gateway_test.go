package docs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// gateway is an mcbridge process serving one block.
type gateway struct {
	addr    string // memcache, bound
	metrics string // HTTP, bound
	cmd     *exec.Cmd
	log     *syncBuffer
	cfg     *config.Config
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startGateway runs mcbridge on the YAML config text (empty: no config),
// with its listeners on free ports and its broker the private node. It
// stops when the test ends, and the queues it used are then deleted.
func startGateway(t *testing.T, yamlText string) *gateway {
	t.Helper()
	cfgText := privateConfig(t, yamlText)
	cfg, err := config.Load(cfgText)
	if err != nil {
		t.Fatalf("the block's config does not load: %v\n%s", err, cfgText)
	}
	file := filepath.Join(t.TempDir(), "mcbridge.yml")
	if err := os.WriteFile(file, cfgText, 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gateway{log: &syncBuffer{}, cfg: cfg}
	g.cmd = exec.Command(filepath.Join(binDir, "mcbridge"), "-config", file, "-log-format", "json", "-log-level", "debug")
	g.cmd.Stdout, g.cmd.Stderr = g.log, g.log
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() {
		_ = g.cmd.Wait()
		close(waited)
	}()
	t.Cleanup(func() {
		queues := g.queuesUsed()
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(20 * time.Second):
			_ = g.cmd.Process.Kill()
			<-waited
			t.Errorf("mcbridge did not stop within 20s of SIGTERM")
		}
		for _, q := range queues {
			testbroker.Delete(t, q)
		}
		for _, x := range cfg.Exchanges {
			testbroker.Delete(t, x.Name)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", clip(g.log.String()))
		}
	})
	testbroker.Eventually(t, 20*time.Second, "mcbridge to serve", func() bool {
		select {
		case <-waited:
			t.Fatalf("mcbridge exited:\n%s", g.log.String())
		default:
		}
		return g.parseServing()
	})
	testbroker.Eventually(t, 20*time.Second, "mcbridge to be ready", g.ready)
	return g
}

// privateConfig rewrites a config so that it listens on free ports and
// uses the private broker node, whatever it says.
func privateConfig(t *testing.T, yamlText string) []byte {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(yamlText), &doc); err != nil {
		t.Fatalf("config: %v", err)
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := doc.Content[0]
	set(root, "listen", scalarNode("127.0.0.1:0"))
	set(root, "metrics_listen", scalarNode("127.0.0.1:0"))
	amqpNode := get(root, "amqp")
	if amqpNode == nil {
		amqpNode = &yaml.Node{Kind: yaml.MappingNode}
		set(root, "amqp", amqpNode)
	}
	set(amqpNode, "urls", &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, Content: []*yaml.Node{scalarNode(testbroker.URL)}})
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func scalarNode(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
}

func get(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, scalarNode(key), v)
}

// parseServing reads the bound addresses from mcbridge's "mcbridge
// serving" log line.
func (g *gateway) parseServing() bool {
	for line := range strings.SplitSeq(g.log.String(), "\n") {
		var rec struct {
			Msg     string `json:"msg"`
			Listen  string `json:"listen"`
			Metrics string `json:"metrics"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "mcbridge serving" {
			g.addr, g.metrics = rec.Listen, rec.Metrics
			return true
		}
	}
	return false
}

func (g *gateway) ready() bool {
	c, err := net.DialTimeout("tcp", g.metrics, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = c.Write([]byte("GET /readyz HTTP/1.0\r\n\r\n"))
	status, _ := bufio.NewReader(c).ReadString('\n')
	return strings.Contains(status, " 200 ")
}

var queueItems = regexp.MustCompile(`^STAT queue_(.+)_items \S+$`)

// queuesUsed asks the gateway which queues it knows: the YAML ones and
// those used through it (stats).
func (g *gateway) queuesUsed() []string {
	c, err := net.DialTimeout("tcp", g.addr, 2*time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write([]byte("stats\r\n"))
	var qs []string
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil || strings.HasPrefix(line, "END") {
			return qs
		}
		if m := queueItems.FindStringSubmatch(strings.TrimRight(line, "\r\n")); m != nil {
			qs = append(qs, m[1])
		}
	}
}

// addresses are the documented addresses a block uses and what stands for
// them in a test.
var (
	memcacheAddr = regexp.MustCompile(`127\.0\.0\.1(:| |", |', )11211\b`)
	metricsAddr  = regexp.MustCompile(`127\.0\.0\.1(:| )9150\b`)
)

// usesGateway: the block talks to a gateway.
func usesGateway(b block) bool {
	return b.lang == "memcache" || b.mark["config"] != "" || memcacheAddr.MatchString(b.text) || metricsAddr.MatchString(b.text)
}

// localize replaces the documented addresses with the gateway's.
func (g *gateway) localize(s string) string {
	if g == nil {
		return s
	}
	_, port, _ := net.SplitHostPort(g.addr)
	_, mport, _ := net.SplitHostPort(g.metrics)
	s = memcacheAddr.ReplaceAllString(s, "127.0.0.1${1}"+port)
	return metricsAddr.ReplaceAllString(s, "127.0.0.1${1}"+mport)
}

func clip(s string) string {
	if len(s) > 6000 {
		return s[:3000] + "\n…\n" + s[len(s)-3000:]
	}
	return s
}
