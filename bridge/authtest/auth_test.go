// Package authtest tests logins (auth.mode broker) against a real broker
// with users, vhosts and permissions made by each test. It is a package of
// its own because every rabbitmqctl call starts an Erlang VM: these tests
// take minutes, and get their own test binary, broker node and time
// budget. The pure parts (throttle arithmetic, credential parsing) are
// tested in package bridge.
package authtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
	"github.com/mcbridge/mcbridge/mcproto"
)

// brokerUser is a RabbitMQ user made for one test and deleted after it.
type brokerUser struct{ name, password string }

// uniqueSuffix keeps users and vhosts of tests (and reruns) apart.
func uniqueSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ctl(t testing.TB, args ...string) {
	t.Helper()
	if out, err := testbroker.Rabbitmqctl(args...); err != nil {
		t.Fatalf("rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// addUser creates a broker user with permissions in vhost (configure,
// write, read regexps; none set when perms is nil).
func addUser(t testing.TB, hint, vhost string, perms []string) brokerUser {
	t.Helper()
	u := brokerUser{name: "mcbt-" + hint + "-" + uniqueSuffix(), password: "pw " + uniqueSuffix() + " x"}
	ctl(t, "add_user", u.name, u.password)
	t.Cleanup(func() { _, _ = testbroker.Rabbitmqctl("delete_user", u.name) })
	if perms != nil {
		ctl(t, append([]string{"set_permissions", "-p", vhost, u.name}, perms...)...)
	}
	return u
}

// addVhost creates a vhost deleted (with its queues) after the test.
func addVhost(t testing.TB) string {
	t.Helper()
	v := "mcbt-vhost-" + uniqueSuffix()
	ctl(t, "add_vhost", v)
	t.Cleanup(func() { _, _ = testbroker.Rabbitmqctl("delete_vhost", v) })
	return v
}

var allPerms = []string{".*", ".*", ".*"}

// authConfig is a test config with auth.mode broker.
func authConfig(anonymous config.AnonymousMode) *config.Config {
	cfg := testgateway.Config()
	cfg.Auth.Mode = config.AuthBroker
	cfg.Auth.Anonymous = anonymous
	return cfg
}

// loginCmd is a text login.
func loginCmd(user, password string) string {
	data := user + " " + password
	return fmt.Sprintf("set auth 0 0 %d\r\n%s\r\n", len(data), data)
}

func (c *client) login(u brokerUser) {
	c.T.Helper()
	c.Do(loginCmd(u.name, u.password), "STORED\r\n")
}

func (g *gateway) authCount(result string) float64 {
	return g.Metric("mcbridge_auth_total", "result", result)
}

// Text login, memcached -Y style: before it every command but quit is
// refused, a wrong password fails (and may be retried), the right one is
// STORED, and the connection then acts as that user (its queue exists in
// the broker, made by that user).
func TestAuthTextLogin(t *testing.T) {
	t.Parallel()
	g := start(t, authConfig(config.AnonymousDeny))
	u := addUser(t, "text", "/", allPerms)
	q := testbroker.Name(t, "q")

	c := g.dial()
	c.Do("get "+q+"\r\n", "CLIENT_ERROR unauthenticated\r\n")
	c.Do("version\r\n", "CLIENT_ERROR unauthenticated\r\n")
	c.Do("stats\r\n", "CLIENT_ERROR unauthenticated\r\n")
	c.Do("mn\r\n", "CLIENT_ERROR unauthenticated\r\n")
	// noreply does not silence it: the client must learn nothing was done.
	c.Do("delete "+q+" noreply\r\n", "CLIENT_ERROR unauthenticated\r\n")
	c.Do(loginCmd(u.name, "wrong"), "CLIENT_ERROR authentication failure\r\n")
	c.Do(loginCmd(u.name+"-nobody", u.password), "CLIENT_ERROR authentication failure\r\n")
	c.Do("set auth 0 0 6\r\nnospce\r\n", "CLIENT_ERROR authentication failure\r\n")
	c.Do("get "+q+"\r\n", "CLIENT_ERROR unauthenticated\r\n")
	c.login(u)
	c.Do("set "+q+" 3 0 5\r\nhello\r\n", "STORED\r\n")
	c.Do("get "+q+"\r\n", "VALUE "+q+" 3 5\r\nhello\r\nEND\r\n")
	c.Do("delete "+q+"\r\n", "DELETED\r\n")
	c.synced()
	if n := testbroker.QueueDepth(t, q); n != 0 {
		t.Errorf("queue depth %d after the ack, want 0", n)
	}

	// A second connection of the same user joins its broker connections;
	// one with another password is checked by the broker, and refused.
	c2 := g.dial()
	c2.Do(loginCmd(u.name, u.password+"x"), "CLIENT_ERROR authentication failure\r\n")
	c2.login(u)
	c2.Do("set "+q+" 0 0 1\r\nx\r\n", "STORED\r\n")
	if n := brokerConnections(t, u.name); n != 2 {
		t.Errorf("%d broker connections of the user, want 2 (publish, consume)", n)
	}
	if got := g.authCount("success"); got != 2 {
		t.Errorf("auth success = %v, want 2", got)
	}
	if got := g.authCount("failure"); got != 4 {
		t.Errorf("auth failure = %v, want 4", got)
	}
	c.Quit()
	// quit is served before a login, too.
	g.dial().Quit()
}

// Binary SASL PLAIN: LIST_MECHS answers PLAIN, AUTH fails with 0x20 and
// succeeds with "Authenticated"; a request before a login gets 0x20 and the
// connection is closed, as memcached does.
func TestAuthBinarySASL(t *testing.T) {
	t.Parallel()
	g := start(t, authConfig(config.AnonymousDeny))
	u := addUser(t, "sasl", "/", allPerms)
	q := testbroker.Name(t, "q")

	c := g.dial()
	c.bsynced() // VERSION needs no login
	c.Do(breq(mcproto.BinSASLList, 1, 0, "", "", ""), bresp(mcproto.BinSASLList, 0, 1, 0, "", "", "PLAIN"))
	c.Do(breq(mcproto.BinSASLAuth, 2, 0, "", "PLAIN", "\x00"+u.name+"\x00wrong"),
		bErr(mcproto.BinSASLAuth, mcproto.BinStatusAuthError, 2, "Auth failure."))
	c.Do(breq(mcproto.BinSASLAuth, 3, 0, "", "CRAM-MD5", "x"),
		bErr(mcproto.BinSASLAuth, mcproto.BinStatusAuthError, 3, "Auth failure."))
	// An authzid other than the user: a user cannot act as another.
	c.Do(breq(mcproto.BinSASLAuth, 4, 0, "", "PLAIN", "guest\x00"+u.name+"\x00"+u.password),
		bErr(mcproto.BinSASLAuth, mcproto.BinStatusAuthError, 4, "Auth failure."))
	c.Do(breq(mcproto.BinSASLStep, 5, 0, "", "PLAIN", "x"),
		bErr(mcproto.BinSASLStep, mcproto.BinStatusAuthError, 5, "Auth failure."))
	c.Do(breq(mcproto.BinSASLAuth, 6, 0, "", "PLAIN", "\x00"+u.name+"\x00"+u.password),
		bresp(mcproto.BinSASLAuth, 0, 6, 0, "", "", "Authenticated"))
	c.Do(bSet(mcproto.BinSet, 7, q, 9, "hi"), bOK(mcproto.BinSet, 7))
	c.Send(bGet(mcproto.BinGet, 8, q))
	cas := c.bhit(mcproto.BinGet, 8, 9, "", "hi")
	c.Do(bDelete(mcproto.BinDelete, 9, cas, q), bOK(mcproto.BinDelete, 9))

	c2 := g.dial()
	c2.Do(bGet(mcproto.BinGet, 1, q), bErr(mcproto.BinGet, mcproto.BinStatusAuthError, 1, "Auth failure."))
	c2.ExpectClosed()
}

// A user limited to ^app1\. cannot declare or read app2.jobs: CLIENT_ERROR
// access refused (binary 0x20), while another user's reservation on
// app2.jobs, and the limited user's own on its queue, stay good.
func TestAuthAccessRefused(t *testing.T) {
	t.Parallel()
	g := start(t, authConfig(config.AnonymousDeny))
	app1 := "app1." + uniqueSuffix()
	app2 := "app2.jobs." + uniqueSuffix()
	t.Cleanup(func() { testbroker.Delete(t, app1); testbroker.Delete(t, app2) })
	limited := addUser(t, "app1", "/", []string{`^app1\.`, `^(app1\..*|amq\.default)$`, `^app1\.`})
	other := addUser(t, "app2", "/", allPerms)

	o := g.dial()
	o.login(other)
	o.Do("set "+app2+" 0 0 4\r\njob1\r\n", "STORED\r\n")
	o.Do("get "+app2+"\r\n", "VALUE "+app2+" 0 4\r\njob1\r\nEND\r\n")

	l := g.dial()
	l.login(limited)
	l.Do("set "+app1+" 0 0 2\r\nok\r\n", "STORED\r\n")
	l.Do("get "+app1+"\r\n", "VALUE "+app1+" 0 2\r\nok\r\nEND\r\n")
	l.Do("get "+app2+"\r\n", "CLIENT_ERROR access refused\r\n")
	l.Do("set "+app2+" 0 0 1\r\nx\r\n", "CLIENT_ERROR access refused\r\n")
	l.Do("mg "+app2+" v\r\n", "CLIENT_ERROR access refused\r\n")
	l.synced()

	// The binary framing says 0x20.
	b := g.dial()
	b.Do(breq(mcproto.BinSASLAuth, 1, 0, "", "PLAIN", "\x00"+limited.name+"\x00"+limited.password),
		bresp(mcproto.BinSASLAuth, 0, 1, 0, "", "", "Authenticated"))
	b.Do(bGet(mcproto.BinGet, 2, app2), bErr(mcproto.BinGet, mcproto.BinStatusAuthError, 2, "Access refused"))
	b.bsynced()

	// Nothing of that touched the reservations.
	l.Do("delete "+app1+"\r\n", "DELETED\r\n")
	o.Do("delete "+app2+"\r\n", "DELETED\r\n")
	if n := testbroker.QueueDepth(t, app2); n != 0 {
		t.Errorf("%s depth %d, want 0", app2, n)
	}
}

// A write refusal of a publish closes that user's publish channel only: the
// sets of another user, and the limited user's own later sets, go on.
func TestAuthPublishRefusedDisturbsNobody(t *testing.T) {
	t.Parallel()
	g := start(t, authConfig(config.AnonymousDeny))
	q := testbroker.Name(t, "q")
	// May declare and read q, may not write to the default exchange.
	noWrite := addUser(t, "nowrite", "/", []string{".*", "^$", ".*"})
	other := addUser(t, "writer", "/", allPerms)

	o := g.dial()
	o.login(other)
	o.Do("set "+q+" 0 0 1\r\na\r\n", "STORED\r\n")
	o.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\na\r\nEND\r\n")

	n := g.dial()
	n.login(noWrite)
	for range 3 {
		n.Do("set "+q+" 0 0 1\r\nb\r\n", "CLIENT_ERROR access refused\r\n")
	}
	o.Do("set "+q+" 0 0 1\r\nc\r\n", "STORED\r\n")
	o.Do("delete "+q+"\r\n", "DELETED\r\n")
	n.Do("get "+q+"\r\n", "VALUE "+q+" 0 1\r\nc\r\nEND\r\n")
	n.Do("delete "+q+"\r\n", "DELETED\r\n")
}

// Permissions cleared while a user is connected: the broker refuses what it
// checks from then on (a queue not used before: RabbitMQ caches a channel's
// recent checks), and the client is told access refused.
func TestAuthPermissionsRevoked(t *testing.T) {
	t.Parallel()
	g := start(t, authConfig(config.AnonymousDeny))
	u := addUser(t, "revoked", "/", allPerms)
	q := testbroker.Name(t, "q")
	q2 := testbroker.Name(t, "q2")
	c := g.dial()
	c.login(u)
	c.Do("set "+q+" 0 0 1\r\na\r\n", "STORED\r\n")
	ctl(t, "clear_permissions", "-p", "/", u.name)
	c.Do("get "+q2+"\r\n", "CLIENT_ERROR access refused\r\n")
	c.Do("set "+q2+" 0 0 1\r\na\r\n", "CLIENT_ERROR access refused\r\n")
	c.synced()
}

// auth.anonymous allow: a client that does not log in acts as the amqp.urls
// user; one whose first command is a login acts as that user.
func TestAuthAnonymousAllow(t *testing.T) {
	t.Parallel()
	g := start(t, authConfig(config.AnonymousAllow))
	q := testbroker.Name(t, "q")
	u := addUser(t, "allow", "/", []string{`^nothing$`, `^nothing$`, `^nothing$`})

	anon := g.dial()
	anon.Do("set "+q+" 0 0 5\r\nhello\r\n", "STORED\r\n")
	anon.Do("get "+q+"\r\n", "VALUE "+q+" 0 5\r\nhello\r\nEND\r\n")
	anon.Do("delete "+q+"\r\n", "DELETED\r\n")
	// A first set whose data is not credentials-shaped is a message.
	first := g.dial()
	first.Do("set "+q+" 0 0 10\r\nhello\r\nbye\r\n", "STORED\r\n")
	first.Do("get "+q+"\r\n", "VALUE "+q+" 0 10\r\nhello\r\nbye\r\nEND\r\n")

	logged := g.dial()
	logged.login(u)
	logged.Do("get "+q+"\r\n", "CLIENT_ERROR access refused\r\n")

	bin := g.dial()
	bin.Do(bSet(mcproto.BinSet, 1, q, 0, "x"), bOK(mcproto.BinSet, 1))
	bin.Do(breq(mcproto.BinSASLAuth, 2, 0, "", "PLAIN", "\x00"+u.name+"\x00"+u.password),
		bresp(mcproto.BinSASLAuth, 0, 2, 0, "", "", "Authenticated"))
	bin.Do(bGet(mcproto.BinGet, 3, q), bErr(mcproto.BinGet, mcproto.BinStatusAuthError, 3, "Access refused"))
}

// "vhost:user" picks the vhost; a bare name is in auth.vhost, where this
// user has no access: a login failure.
func TestAuthVhostUser(t *testing.T) {
	t.Parallel()
	g := start(t, authConfig(config.AnonymousDeny))
	v := addVhost(t)
	u := addUser(t, "vh", v, allPerms)
	q := "jobs." + uniqueSuffix()

	c := g.dial()
	c.Do(loginCmd(u.name, u.password), "CLIENT_ERROR authentication failure\r\n")
	c.login(brokerUser{name: v + ":" + u.name, password: u.password})
	c.Do("set "+q+" 0 0 2\r\nvh\r\n", "STORED\r\n")
	out, err := testbroker.Rabbitmqctl("list_queues", "-p", v, "name", "messages")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, q) {
		t.Errorf("queue %s not in vhost %s: %s", q, v, out)
	}
	if out, _ := testbroker.Rabbitmqctl("list_queues", "-p", "/", "name"); strings.Contains(out, q) {
		t.Errorf("queue %s in vhost /", q)
	}
	c.Do("get "+q+"\r\n", "VALUE "+q+" 0 2\r\nvh\r\nEND\r\n")
}

// brokerConnections counts the broker's connections of a user.
func brokerConnections(t testing.TB, user string) int {
	t.Helper()
	out, err := testbroker.Rabbitmqctl("list_connections", "user")
	if err != nil {
		t.Fatalf("list_connections: %v", err)
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == user {
			n++
		}
	}
	return n
}

// A user's broker connections (one publish, consume_connections consume)
// are shared by its client connections and closed auth.idle_close after
// the last one ended; a new login opens them again.
func TestAuthIdleClose(t *testing.T) {
	t.Parallel()
	cfg := authConfig(config.AnonymousDeny)
	cfg.Auth.IdleClose = 300 * time.Millisecond
	cfg.AMQP.ConsumeConnections = 2
	g := start(t, cfg)
	u := addUser(t, "idle", "/", allPerms)

	a, b := g.dial(), g.dial()
	a.login(u)
	b.login(u)
	testbroker.Eventually(t, 10*time.Second, "3 broker connections of the user", func() bool { return brokerConnections(t, u.name) == 3 })
	a.Quit()
	// Still used by b: kept past idle_close.
	time.Sleep(2 * cfg.Auth.IdleClose)
	if n := brokerConnections(t, u.name); n != 3 {
		t.Fatalf("%d broker connections of the user while a client uses them, want 3", n)
	}
	b.synced()
	b.Quit()
	testbroker.Eventually(t, 10*time.Second, "the user's broker connections to close", func() bool {
		return brokerConnections(t, u.name) == 0
	})
	c := g.dial()
	c.login(u)
	c.Do("version\r\n", "VERSION "+bridge.Version+"\r\n")
}

// auth.max_users bounds the users with broker connections: past it a login
// answers SERVER_ERROR too many users, counted; once a user closed, another
// gets in.
func TestAuthMaxUsers(t *testing.T) {
	t.Parallel()
	cfg := authConfig(config.AnonymousDeny)
	cfg.Auth.MaxUsers = 1
	cfg.Auth.IdleClose = 100 * time.Millisecond
	g := start(t, cfg)
	u1 := addUser(t, "max1", "/", allPerms)
	u2 := addUser(t, "max2", "/", allPerms)

	a := g.dial()
	a.login(u1)
	b := g.dial()
	b.Do(loginCmd(u2.name, u2.password), "SERVER_ERROR too many users\r\n")
	if got := g.Metric("mcbridge_limit_refusals_total", "limit", "max_users"); got != 1 {
		t.Errorf("limit refusals max_users = %v, want 1", got)
	}
	if got := g.authCount("refused"); got != 1 {
		t.Errorf("auth refused = %v, want 1", got)
	}
	// The same user is no new identity.
	a2 := g.dial()
	a2.login(u1)
	a.Quit()
	a2.Quit()
	testbroker.Eventually(t, 10*time.Second, "a free user slot", func() bool {
		c := mctest.MustDialConn(t, g.Addr)
		defer c.Close()
		line, err := c.RoundTrip(loginCmd(u2.name, u2.password))
		return err == nil && line == "STORED"
	})
}

// dialFrom connects to the gateway from a local address of the loopback
// network other than 127.0.0.1: another client address.
func dialFrom(t testing.TB, ip, addr string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{mctest.New(t, nc)}
}

// Failed logins slow that address's later logins (spaced by a delay that
// grows with its recent failures), while another address logs in at once.
func TestAuthFailedLoginsSlowed(t *testing.T) {
	g := start(t, authConfig(config.AnonymousDeny))
	u := addUser(t, "slow", "/", allPerms)
	// The user's broker connections are open before the timing starts.
	g.dial().login(u)

	bad := g.dial()
	const failures = 6
	for range failures {
		bad.Do(loginCmd(u.name, "guess"), "CLIENT_ERROR authentication failure\r\n")
	}
	start := time.Now()
	other := dialFrom(t, "127.0.0.2", g.Addr)
	other.login(u)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a login from another address took %v", d)
	}
	start = time.Now()
	bad.login(u)
	// Six failures space that address's logins 50ms·2⁵ = 1.6s apart
	// (docs/protocol.md#authentication); half of it is a safe bound.
	want := 800 * time.Millisecond
	if d := time.Since(start); d < want {
		t.Errorf("a login from the failing address took %v, want at least %v", d, want)
	}
}

// The cost of a login: the first of a user opens 1 + consume_connections
// broker connections; later ones (same password) open none. The times are
// logged (go test -v -run TestAuthLoginCost).
func TestAuthLoginCost(t *testing.T) {
	cfg := authConfig(config.AnonymousDeny)
	cfg.AMQP.ConsumeConnections = 2
	g := start(t, cfg)
	u := addUser(t, "cost", "/", allPerms)

	start := time.Now()
	// From another address, so that its failure slows none of the logins
	// measured next.
	dialFrom(t, "127.0.0.2", g.Addr).Do(loginCmd(u.name, "wrong"), "CLIENT_ERROR authentication failure\r\n")
	refused := time.Since(start)
	start = time.Now()
	g.dial().login(u)
	first := time.Since(start)
	if n := brokerConnections(t, u.name); n != 1+cfg.AMQP.ConsumeConnections {
		t.Errorf("first login opened %d broker connections, want %d", n, 1+cfg.AMQP.ConsumeConnections)
	}
	const later = 20
	start = time.Now()
	for range later {
		g.dial().login(u)
	}
	each := time.Since(start) / later
	if n := brokerConnections(t, u.name); n != 1+cfg.AMQP.ConsumeConnections {
		t.Errorf("later logins left %d broker connections, want %d", n, 1+cfg.AMQP.ConsumeConnections)
	}
	t.Logf("wrong password %v; first login %v (opens %d broker connections); later logins %v each (dial + login, no broker round trip)",
		refused, first, 1+cfg.AMQP.ConsumeConnections, each)
}
