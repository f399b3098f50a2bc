package cluster

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mcbridge/mcbridge/internal/rabbitnode"
)

// node is one RabbitMQ node of the test cluster: a private node of this
// test binary (internal/rabbitnode).
type node struct {
	*rabbitnode.Node
	short string // rmqa
	name  string // its Erlang node name, mcbc-rmqa-<random>@localhost
	port  int    // AMQP, on 127.0.0.1
}

func (n *node) url() string { return n.URL() }

// nodes are the cluster, in amqp.urls order; nodes[0] is the one the others
// join. startCluster fills it.
var nodes []*node

func urls() []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.url())
	}
	return out
}

// nodeByPort maps an AMQP port to its node (nil: not ours).
func nodeByPort(port int) *node {
	for _, n := range nodes {
		if n.port == port {
			return n
		}
	}
	return nil
}

// ctlTimeout bounds one rabbitmqctl call.
const ctlTimeout = rabbitnode.CtlTimeout

// ctl runs `rabbitmqctl -n <node> -q args…` against the cluster node named
// nodeName and returns its output. Every call names its node: no other
// node is ever addressed.
func ctl(nodeName string, args ...string) (string, error) {
	return ctlWithin(ctlTimeout, nodeName, args...)
}

func ctlWithin(d time.Duration, nodeName string, args ...string) (string, error) {
	for _, n := range nodes {
		if n.name == nodeName {
			return n.CtlWithin(d, args...)
		}
	}
	return "", fmt.Errorf("rabbitmqctl -n %s: not a node of the test cluster", nodeName)
}

// clusterRun is the test cluster of this test binary.
type clusterRun struct {
	host *rabbitnode.Host
}

// startCluster starts the three nodes and joins rmqb and rmqc to rmqa. On
// error the caller still calls stop.
func startCluster() (*clusterRun, error) {
	host, err := rabbitnode.NewHost("mcbc")
	if err != nil {
		return nil, err
	}
	c := &clusterRun{host: host}
	for _, short := range []string{"rmqa", "rmqb", "rmqc"} {
		rn, err := host.NewNode(short)
		if err != nil {
			return c, err
		}
		nodes = append(nodes, &node{Node: rn, short: short, name: rn.Name})
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.Start() })
	}
	wg.Wait()
	for i, n := range nodes {
		if errs[i] != nil {
			return c, errs[i]
		}
		n.port = n.Port() // fixed once it ran
	}
	for _, n := range nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", nodes[0].name}, {"start_app"}} {
			if _, err := ctl(n.name, args...); err != nil {
				return c, fmt.Errorf("join %s to %s: %v", n.name, nodes[0].name, err)
			}
		}
		if err := awaitStartup(n, 60*time.Second); err != nil {
			return c, err
		}
	}
	if err := awaitRunning(nodes[0], len(nodes), 30*time.Second); err != nil {
		return c, err
	}
	return c, nil
}

// dir holds the nodes' files.
func (c *clusterRun) dir() string { return c.host.Dir }

// awaitStartup waits for the node's rabbit app, e.g. after start_app.
func awaitStartup(n *node, within time.Duration) error { return n.AwaitStartup(within) }

// clusterStatus is the part of `cluster_status --formatter json` we read.
type clusterStatus struct {
	RunningNodes []string `json:"running_nodes"`
	DiskNodes    []string `json:"disk_nodes"`
}

func status(via *node) (clusterStatus, error) {
	var st clusterStatus
	out, err := ctlWithin(20*time.Second, via.name, "cluster_status", "--formatter", "json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &st); err != nil {
		return st, fmt.Errorf("cluster_status: %v: %s", err, out)
	}
	return st, nil
}

// awaitRunning waits until via reports want running nodes.
func awaitRunning(via *node, want int, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last clusterStatus
	var lastErr error
	for time.Now().Before(deadline) {
		last, lastErr = status(via)
		if lastErr == nil && len(last.RunningNodes) == want {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("cluster via %s: want %d running nodes, have %v (disc nodes %v) %v", via.name, want, last.RunningNodes, last.DiskNodes, lastErr)
}

// jsonPart skips anything rabbitmqctl prints before the JSON document.
func jsonPart(s string) string {
	if i := strings.IndexAny(s, "[{"); i >= 0 {
		return s[i:]
	}
	return s
}

// stop stops every node and removes their files, whatever state the run is
// in; if this process dies first, the host's watchdog does it.
func (c *clusterRun) stop() error {
	if c == nil {
		return nil // nothing was started
	}
	return c.host.Close()
}
