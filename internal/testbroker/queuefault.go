package testbroker

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// SuspendQueue suspends the broker's process of the classic queue name (in
// vhost /) until resume is called or the test ends: the queue accepts
// nothing, so publishes routed to it get no confirm and gets of it no
// answer, while the channel, the connection and every other queue work on.
// It is how a single slow or stuck queue looks to a client.
func SuspendQueue(t testing.TB, name string) (resume func()) {
	t.Helper()
	if _, err := Rabbitmqctl("eval", queueProcessCall(name, "suspend")); err != nil {
		t.Fatalf("suspend queue %s: %v", name, err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if _, err := Rabbitmqctl("eval", queueProcessCall(name, "resume")); err != nil {
				t.Errorf("resume queue %s: %v", name, err)
			}
		})
	}
	t.Cleanup(resume)
	return resume
}

// queueProcessCall is the Erlang expression that applies sys:<fn> to the
// queue's process.
func queueProcessCall(name, fn string) string {
	quoted := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name)
	return fmt.Sprintf(`{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"%s">>)), sys:%s(amqqueue:get_pid(Q)).`, quoted, fn)
}
