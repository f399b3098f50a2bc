package amqp_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	mcamqp "github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// heartbeats returns the negotiated heartbeat (seconds) of every broker
// connection whose name starts with prefix.
func heartbeats(t *testing.T, prefix string) []int {
	t.Helper()
	out, err := testbroker.Rabbitmqctl("list_connections", "timeout", "client_properties", "--formatter", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Timeout int             `json:"timeout"`
		Props   json.RawMessage `json:"client_properties"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("list_connections: %v\n%s", err, out)
	}
	var got []int
	for _, r := range rows {
		// A connection still in its handshake (of this test or another
		// package's) lists its properties as the string "none".
		var props [][]json.RawMessage
		if json.Unmarshal(r.Props, &props) != nil {
			continue
		}
		for _, p := range props {
			var key, value string
			if len(p) == 3 && json.Unmarshal(p[0], &key) == nil && key == "connection_name" &&
				json.Unmarshal(p[2], &value) == nil && strings.HasPrefix(value, prefix) {
				got = append(got, r.Timeout)
			}
		}
	}
	return got
}

// A negative Heartbeat takes the broker's proposal (amqp091-go turns 0 into
// its own 10 s, and no setting switches heartbeats off: it takes the larger
// of a zero and the broker's value; RabbitMQ proposes 60 s unless
// configured otherwise); the default is 10 s.
func TestHeartbeatSetting(t *testing.T) {
	for _, tc := range []struct {
		heartbeat time.Duration
		want      int
	}{{-1, 60}, {0, 10}, {3 * time.Second, 3}} {
		c := startClient(t, mcamqp.Options{Heartbeat: tc.heartbeat})
		name := c.ConnectionName()
		var got []int
		testbroker.Eventually(t, 10*time.Second, "the connections listed", func() bool {
			got = heartbeats(t, name)
			return len(got) == 2 // publish and consume
		})
		for _, h := range got {
			if h != tc.want {
				t.Errorf("Heartbeat %v: broker sees %v, want %d for each connection", tc.heartbeat, got, tc.want)
				break
			}
		}
		c.Close()
	}
}
