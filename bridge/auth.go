package bridge

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/mcproto"
)

// Logins (auth.mode broker, SPEC §2a): a client gives a broker user's name
// and password, the broker checks them by accepting (or refusing) AMQP
// connections opened with them, and the connection then acts as that user
// (its tenant). Text and meta connections log in with memcached's -Y
// `set <any key> <flags> <exptime> <bytes>` whose data is `<user>
// <password>`; binary ones with SASL PLAIN. Both come here.

// loginOutcome says how a login ended, for each framing to spell.
type loginOutcome uint8

const (
	loginOK           loginOutcome = iota
	loginFailed                    // wrong credentials, or refused unchecked: CLIENT_ERROR authentication failure / 0x20
	loginUnavailable               // the gateway could not have it checked: SERVER_ERROR
	loginTooManyUsers              // auth.max_users: SERVER_ERROR too many users
)

// Replies of logins, memcached's spellings where it has them.
const (
	msgUnauthenticated = "unauthenticated"
	msgAuthFailure     = "authentication failure"
	msgAccessRefused   = "access refused"
	msgTooManyUsers    = "too many users"
	msgLoginUnverified = "cannot check login: broker not reachable"
)

// maxLoginData bounds the data of a text login, as memcached does its
// authentication token.
const maxLoginData = 1024

// loginCredentials splits a text login's data, "<user> <password>", at its
// first space, as memcached does. ok is false when there is none.
func loginCredentials(data []byte) (user, password string, ok bool) {
	u, p, found := bytes.Cut(data, []byte{' '})
	if !found || len(u) == 0 || len(data) > maxLoginData {
		return "", "", false
	}
	return string(u), string(p), true
}

// looksLikeLogin tells a login from a message under auth.anonymous allow,
// where the first set of a connection may be either: a login is one line
// of at most maxLoginData bytes with a user name, a space and a password.
func looksLikeLogin(data []byte) bool {
	if len(data) > maxLoginData || bytes.ContainsAny(data, "\r\n\x00") {
		return false
	}
	u, p, found := bytes.Cut(data, []byte{' '})
	return found && len(u) > 0 && len(p) > 0
}

// tenantKeyFor reads "vhost:user" as the MQTT plugin does (the vhost is
// what comes before the first colon); a name without one is in
// auth.vhost.
func tenantKeyFor(name string, auth *config.Auth) tenantKey {
	if vhost, user, ok := strings.Cut(name, ":"); ok && vhost != "" && user != "" {
		return tenantKey{vhost: vhost, user: user}
	}
	return tenantKey{vhost: auth.VHost, user: name}
}

// remoteIP is the address logins are throttled by: the client's IP
// without its port.
func remoteIP(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// login runs one login of the connection and counts it. The password is
// passed on to the broker client that checks it and never logged.
func (c *conn) login(name, password string) loginOutcome {
	outcome, result := c.checkLogin(name, password)
	c.srv.metrics.Auth.WithLabelValues(result).Inc()
	return outcome
}

// checkLogin is login without the count: the outcome, and the result
// label of mcbridge_auth_total.
func (c *conn) checkLogin(name, password string) (loginOutcome, string) {
	srv := c.srv
	log := srv.log.With("remote", c.nc.RemoteAddr().String(), "user", name)
	sess := c.sess
	if sess.holdsAny() {
		// Changing user with reservations held would leave them owned by
		// an identity the connection no longer acts as.
		log.Info("login refused: the connection holds reservations as another user")
		return loginFailed, metrics.AuthRefused
	}
	ip := remoteIP(c.nc.RemoteAddr())
	wait, ok := srv.throttle.reserve(ip, time.Now())
	if !ok {
		log.Info("login refused unchecked: too many recent failures from this address")
		return loginFailed, metrics.AuthRefused
	}
	if wait > 0 {
		// Its address failed recently: its logins take turns.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-srv.ctx.Done():
			t.Stop()
			return loginUnavailable, metrics.AuthRefused
		}
	}
	if name == "" {
		srv.throttle.failed(ip, time.Now())
		return loginFailed, metrics.AuthFailure
	}
	start := time.Now()
	t, err := srv.tenants.login(srv.ctx, tenantKeyFor(name, &srv.cfg.Auth), password)
	switch {
	case err == nil:
		old := sess.t.Swap(t)
		if old != nil && old != srv.defaultTenant {
			srv.tenants.release(old)
		}
		log.Debug("logged in", "took", time.Since(start))
		return loginOK, metrics.AuthSuccess
	case errors.Is(err, amqp.ErrLoginRefused):
		srv.throttle.failed(ip, time.Now())
		log.Info("login failed: the broker refused the credentials")
		return loginFailed, metrics.AuthFailure
	case errors.Is(err, errTooManyUsers):
		srv.metrics.LimitRefused(metrics.LimitMaxUsers)
		log.Warn("login refused: auth.max_users users have broker connections", "max_users", srv.cfg.Auth.MaxUsers)
		return loginTooManyUsers, metrics.AuthRefused
	default:
		log.Warn("login not checked: broker unusable", "err", err)
		return loginUnavailable, metrics.AuthRefused
	}
}

// holdsAny reports whether the connection holds a reservation.
func (s *session) holdsAny() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held) > 0
}

// textAuth is the login step of a text or meta command on a connection
// that may still log in (auth.mode broker). handled: the command was a
// login, or was refused for want of one.
//
// Under auth.anonymous deny, every set before a successful login is a
// login (memcached's -Y) and every other command but quit answers
// CLIENT_ERROR unauthenticated. Under allow, only the connection's first
// command may log in, and only a set whose data looks like credentials
// (see looksLikeLogin): any other first command makes the connection act
// anonymously, as the amqp.urls user, for good.
func (c *conn) textAuth(cmd *mcproto.Command) (handled bool) {
	srv := c.srv
	if srv.cfg.Auth.Mode != config.AuthBroker || c.authDone {
		return false
	}
	anonymous := srv.cfg.Auth.Anonymous == config.AnonymousAllow
	if cmd.Op == mcproto.OpSet && (!anonymous || looksLikeLogin(cmd.Data)) {
		c.textLogin(cmd.Data)
		return true
	}
	if anonymous {
		c.authDone = true
		return false
	}
	if cmd.Op == mcproto.OpQuit {
		return false
	}
	srv.count(cmd.Op, tallyNone, unauthenticated)
	// Like memcached, answered whatever noreply says: the client must
	// learn that nothing it sent was done.
	c.w.ClientError(msgUnauthenticated)
	return true
}

// textLogin logs in with the data of a set and answers it, noreply or
// not, as memcached does: STORED, or CLIENT_ERROR authentication failure.
func (c *conn) textLogin(data []byte) {
	user, password, ok := loginCredentials(data)
	if !ok {
		c.srv.metrics.Auth.WithLabelValues(metrics.AuthFailure).Inc()
		c.w.ClientError(msgAuthFailure)
		return
	}
	switch c.login(user, password) {
	case loginOK:
		c.authDone = true
		c.w.Stored()
	case loginFailed:
		c.w.ClientError(msgAuthFailure)
	case loginTooManyUsers:
		c.w.ServerError(msgTooManyUsers)
	default:
		c.w.ServerError(msgLoginUnverified)
	}
}

// saslMechanisms is the answer to SASL LIST_MECHS.
const saslMechanisms = "PLAIN"

// binMsgAccessRefused is the body of a 0x0020 answering an operation that
// the broker refused the user.
const binMsgAccessRefused = "Access refused"

// binaryAuth is the login step of a binary request (auth.mode broker).
// handled: it was a SASL request, or refused for want of a login (then
// quit: memcached closes the connection after that answer).
//
// SASL LIST_MECHS answers PLAIN; AUTH with PLAIN logs in (as memcached:
// "Authenticated", else 0x0020); STEP has nothing to continue (PLAIN is
// one step): 0x0020. Before a login, VERSION and QUIT are served, and,
// under auth.anonymous allow, everything else as the amqp.urls user.
func (b *binaryConn) binaryAuth(req *mcproto.BinaryRequest) (handled, quit bool) {
	srv := b.srv
	if srv.cfg.Auth.Mode != config.AuthBroker {
		return false, false
	}
	op := req.Opcode
	switch op {
	case mcproto.BinSASLList:
		b.w.Status(op, mcproto.BinStatusOK, req.Opaque, saslMechanisms)
		return true, false
	case mcproto.BinSASLAuth:
		b.saslAuth(req)
		return true, false
	case mcproto.BinSASLStep:
		b.w.Status(op, mcproto.BinStatusAuthError, req.Opaque, mcproto.BinMsgAuthFailure)
		return true, false
	case mcproto.BinVersion, mcproto.BinQuit, mcproto.BinQuitQ:
		return false, false
	}
	if b.sess.tenant() != nil {
		return false, false
	}
	srv.count(binaryLabel(op), tallyNone, unauthenticated)
	b.w.Status(op, mcproto.BinStatusAuthError, req.Opaque, mcproto.BinMsgAuthFailure)
	return true, true
}

// saslAuth serves SASL AUTH with PLAIN: the value is
// "authzid\x00authcid\x00password" (RFC 4616); authcid is the user, and an
// authzid other than empty or the user is refused (a user cannot act as
// another).
func (b *binaryConn) saslAuth(req *mcproto.BinaryRequest) {
	op := req.Opcode
	fail := func() { b.w.Status(op, mcproto.BinStatusAuthError, req.Opaque, mcproto.BinMsgAuthFailure) }
	parts := bytes.SplitN(req.Value, []byte{0}, 3)
	if string(req.Key) != saslMechanisms || len(parts) != 3 || (len(parts[0]) > 0 && !bytes.Equal(parts[0], parts[1])) {
		b.srv.metrics.Auth.WithLabelValues(metrics.AuthFailure).Inc()
		fail()
		return
	}
	switch b.login(string(parts[1]), string(parts[2])) {
	case loginOK:
		b.authDone = true
		b.w.Status(op, mcproto.BinStatusOK, req.Opaque, mcproto.BinMsgAuthenticated)
	case loginFailed:
		fail()
	case loginTooManyUsers:
		b.w.Status(op, mcproto.BinStatusInternalError, req.Opaque, msgTooManyUsers)
	default:
		b.w.Status(op, mcproto.BinStatusInternalError, req.Opaque, msgLoginUnverified)
	}
}
