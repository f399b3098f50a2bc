package testbroker

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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
	return fmt.Sprintf(`{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"%s">>)), sys:%s(amqqueue:get_pid(Q)).`, erlangString(name), fn)
}

// erlangString escapes s for the inside of an Erlang string or binary
// literal ("...").
func erlangString(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}

// SuspendChannels suspends the broker's processes of every channel open
// now on the connections whose name starts with prefix, until resume is
// called or the test ends: what is sent on them gets no answer, while
// their connection's other channels, those opened later, and every queue
// work on. It is how a channel stuck in a call to a queue (a quorum queue
// waiting for a leader that went away, up to 65 s) looks to a client. It
// returns how many it suspended.
func SuspendChannels(t testing.TB, prefix string) (n int, resume func()) {
	t.Helper()
	key := fmt.Sprintf("mcbt_suspended_%d", time.Now().UnixNano())
	out, err := Rabbitmqctl("eval", fmt.Sprintf(`Prefix = <<"%s">>,
Named = fun(P) ->
    Props = proplists:get_value(client_properties, rabbit_networking:connection_info(P, [client_properties]), []),
    case lists:keyfind(<<"connection_name">>, 1, Props) of
        {_, _, Name} -> binary:longest_common_prefix([Name, Prefix]) =:= byte_size(Prefix);
        _ -> false
    end
end,
Conns = [P || P <- rabbit_networking:connections_local(), Named(P)],
Chs = [C || C <- rabbit_channel:list_local(), lists:member(proplists:get_value(connection, rabbit_channel:info(C, [connection])), Conns)],
[sys:suspend(C) || C <- Chs],
persistent_term:put(%s, Chs),
length(Chs).`, erlangString(prefix), key))
	if err != nil {
		t.Fatalf("suspend channels of %q: %v", prefix, err)
	}
	if n, err = strconv.Atoi(strings.TrimSpace(out)); err != nil {
		t.Fatalf("suspend channels of %q: %q", prefix, out)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if _, err := Rabbitmqctl("eval", fmt.Sprintf(`[sys:resume(C) || C <- persistent_term:get(%s)], persistent_term:erase(%s).`, key, key)); err != nil {
				t.Errorf("resume channels of %q: %v", prefix, err)
			}
		})
	}
	t.Cleanup(resume)
	return n, resume
}
