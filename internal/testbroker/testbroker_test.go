package testbroker_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestMain(m *testing.M) { testbroker.Main(m) }

// The binary's node is its own: not the machine's broker, named after the
// package, and what rabbitmqctl addresses.
func TestPrivateNode(t *testing.T) {
	_, port, err := net.SplitHostPort(testbroker.Addr)
	if err != nil || port == "5672" || !strings.HasPrefix(testbroker.Addr, "127.0.0.1:") {
		t.Fatalf("Addr %q: want 127.0.0.1 and a port other than 5672 (%v)", testbroker.Addr, err)
	}
	if testbroker.URL != "amqp://guest:guest@"+testbroker.Addr+"/" {
		t.Errorf("URL %q does not match Addr %q", testbroker.URL, testbroker.Addr)
	}
	n := testbroker.Node(t)
	if !strings.HasPrefix(n.Name, "mcbt-testbroker-") {
		t.Errorf("node name %q, want mcbt-testbroker-…", n.Name)
	}
	out, err := testbroker.Rabbitmqctl("eval", "node().")
	if err != nil || strings.TrimSpace(out) != "'"+n.Name+"'" {
		t.Fatalf("rabbitmqctl eval node(): %q %v, want '%s'", out, err, n.Name)
	}
	// A connection of the test is on that node.
	name := testbroker.Name(t, "conn")
	conn, err := amqp091.DialConfig(testbroker.URL, amqp091.Config{Properties: amqp091.Table{"connection_name": name}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
	if got := testbroker.MustCloseConnections(t, name); got != 1 {
		t.Errorf("closed %d connections named %s, want 1", got, name)
	}
	select {
	case err := <-closed:
		if err == nil || err.Code != amqp091.ConnectionForced {
			t.Errorf("connection closed with %v, want 320 CONNECTION_FORCED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed by the broker")
	}
}

// publishConfirmed publishes body persistently to queue and waits for the
// broker's confirm.
func publishConfirmed(t *testing.T, ch *amqp091.Channel, queue, body string) {
	t.Helper()
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", queue, true, false,
		amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("confirm of %q: %v %v", body, ok, err)
	}
}

func confirmChannel(t *testing.T, conn *amqp091.Connection) *amqp091.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return ch
}

// StopNode is a broker restart's first half: connections close and dials
// are refused. After StartNode the node is back on the same address and a
// durable queue still holds its confirmed persistent message.
func TestStopStartNodeKeepsDurableMessages(t *testing.T) {
	q := testbroker.Name(t, "durable")
	conn := testbroker.Dial(t)
	closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
	ch := confirmChannel(t, conn)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, q, "survives")

	testbroker.StopNode(t)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the client's connection stayed open after StopNode")
	}
	if c, err := net.DialTimeout("tcp", testbroker.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s accepts connections after StopNode", testbroker.Addr)
	}

	testbroker.StartNode(t)
	if n := testbroker.QueueDepth(t, q); n != 1 {
		t.Fatalf("queue %s holds %d messages after the restart, want 1", q, n)
	}
	d, ok, err := testbroker.Channel(t).Get(q, true)
	if err != nil || !ok || string(d.Body) != "survives" {
		t.Fatalf("get after the restart: %q %v %v, want %q", d.Body, ok, err, "survives")
	}
}

// A test that stops the node and ends without starting it leaves it
// running for the next test anyway.
func TestStopNodeRestartsInCleanup(t *testing.T) {
	t.Run("stops", func(t *testing.T) { testbroker.StopNode(t) })
	if !testbroker.Node(t).Running() {
		t.Fatal("the node is not running after the test that stopped it")
	}
	testbroker.Channel(t) // dials
}

// A frozen node accepts a publish on an open connection but confirms
// nothing until it is thawed; then the confirm comes.
func TestFreezeNodeHoldsConfirmsUntilThaw(t *testing.T) {
	q := testbroker.Name(t, "frozen")
	ch := confirmChannel(t, testbroker.Dial(t))
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, q, "before")

	thaw := testbroker.FreezeNode(t)
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", q, true, false,
		amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte("during")})
	if err != nil {
		t.Fatal(err)
	}
	// Absence can only be watched for a while: a live node confirms in
	// milliseconds.
	select {
	case <-dc.Done():
		t.Fatalf("a frozen node confirmed a publish (ack %v)", dc.Acked())
	case <-time.After(1500 * time.Millisecond):
	}
	if c, err := amqp091.DialConfig(testbroker.URL, amqp091.Config{Dial: amqp091.DefaultDial(time.Second)}); err == nil {
		c.Close()
		t.Fatal("a frozen node completed an AMQP handshake")
	}

	thaw()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("confirm after the thaw: %v %v, want an ack", ok, err)
	}
	if n := testbroker.QueueDepth(t, q); n != 2 {
		t.Fatalf("queue holds %d messages, want 2", n)
	}
}

func consumerTimeout(t *testing.T) string {
	t.Helper()
	out, err := testbroker.Rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// SetConsumerTimeout: a delivery held past the timeout closes its channel
// with PRECONDITION_FAILED; the old value is back after the test.
func TestSetConsumerTimeout(t *testing.T) {
	before := consumerTimeout(t)
	t.Run("lowered", func(t *testing.T) {
		q := testbroker.Name(t, "held")
		testbroker.SetConsumerTimeout(t, time.Second)
		if got := consumerTimeout(t); got != "{ok,1000}" {
			t.Fatalf("consumer_timeout %s, want {ok,1000}", got)
		}
		conn := testbroker.Dial(t)
		ch := confirmChannel(t, conn)
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		publishConfirmed(t, ch, q, "held")
		closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
		deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-deliveries:
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery")
		}
		held := time.Now()
		select {
		case err := <-closed:
			if err == nil || err.Code != amqp091.PreconditionFailed {
				t.Fatalf("channel closed with %v, want 406 PRECONDITION_FAILED", err)
			}
			t.Logf("channel closed %v after the delivery: %v", time.Since(held).Round(time.Millisecond), err)
		case <-time.After(20 * time.Second):
			t.Fatal("the channel of a delivery held 20s survived a 1s consumer_timeout")
		}
	})
	if got := consumerTimeout(t); got != before {
		t.Errorf("consumer_timeout after the test %s, want %s again", got, before)
	}
}

// MemoryAlarm blocks publishing connections until it is cleared: a
// publish is not confirmed meanwhile.
func TestMemoryAlarm(t *testing.T) {
	q := testbroker.Name(t, "alarm")
	conn := testbroker.Dial(t)
	blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	ch := confirmChannel(t, conn)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	wait := func(active bool) {
		t.Helper()
		select {
		case b := <-blocked:
			if b.Active != active {
				t.Fatalf("connection.blocked active=%v (%s), want %v", b.Active, b.Reason, active)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("no connection.blocked active=%v within 15s", active)
		}
	}
	clear := testbroker.MemoryAlarm(t)
	// The broker blocks a connection when it publishes.
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", q, true, false,
		amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte("blocked")})
	if err != nil {
		t.Fatal(err)
	}
	wait(true)
	select {
	case <-dc.Done():
		t.Fatalf("a publish was confirmed during the memory alarm (ack %v)", dc.Acked())
	case <-time.After(500 * time.Millisecond):
	}
	clear()
	wait(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("confirm after the alarm: %v %v", ok, err)
	}
}

// fakeT records what MustBePrivate says instead of failing the test.
type fakeT struct {
	testing.TB
	failed []string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = append(f.failed, fmt.Sprintf(format, args...))
}

// MustBePrivate refuses the machine's broker in every spelling, and only it.
func TestMustBePrivate(t *testing.T) {
	tests := []struct {
		urls []string
		want string // "" passes
	}{
		{nil, "no broker URL"},
		{[]string{"amqp://guest:guest@127.0.0.1:5672/"}, "127.0.0.1:5672"},
		{[]string{"amqp://localhost/"}, "localhost:5672"},
		{[]string{"amqp://guest:guest@[::1]:5672/"}, "::1"},
		{[]string{"amqp://guest:secret@127.0.0.1:1/", "amqp://guest:guest@0.0.0.0:5672/"}, "0.0.0.0:5672"},
		{[]string{testbroker.URL}, ""},
		{[]string{"amqp://guest:guest@127.0.0.1:1/"}, ""},
		{[]string{"amqp://app:pw@rabbit-1:5672/prod"}, ""},
	}
	for _, tc := range tests {
		f := &fakeT{TB: t}
		testbroker.MustBePrivate(f, tc.urls)
		got := strings.Join(f.failed, "; ")
		switch {
		case tc.want == "" && got != "":
			t.Errorf("%v: refused: %s", tc.urls, got)
		case tc.want != "" && !strings.Contains(got, tc.want):
			t.Errorf("%v: got %q, want a refusal naming %q", tc.urls, got, tc.want)
		case strings.Contains(got, "secret"):
			t.Errorf("%v: the refusal shows the password: %s", tc.urls, got)
		}
	}
}
