package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge/internal/queues"
)

// A tenant is one broker identity, (user, vhost), with its own broker
// client (one publish and consume_connections consume connections, opened
// with that user's credentials) and its own queue table, shared by every
// client connection logged in as that user. The default tenant is the
// amqp.urls user: every connection under auth.mode none, and anonymous
// ones under auth.anonymous allow; it lives as long as the server.
//
// A logged-in tenant is closed auth.idle_close after its last client
// connection ended. Reservations never outlive the connection that holds
// them (a closing connection requeues what it holds), so "no client
// connection" also means "no reservation".
type tenant struct {
	key    tenantKey
	broker *amqp.Client
	queues *queues.Table
	// passwordSum is the SHA-256 of the password the broker accepted, to
	// tell a later login with the same password in constant time. The
	// password itself is only in broker's URLs, which it needs to
	// reconnect: it goes with broker.
	passwordSum [sha256.Size]byte

	// opened is closed when the opening (the broker's verdict on the
	// credentials) ended; openErr is its result.
	opened  chan struct{}
	openErr error

	// Guarded by tenantSet.mu:
	users   int         // client connections logged in as this tenant
	idle    *time.Timer // closes the tenant; set while users == 0
	idleGen uint64      // which idle timer is the current one
}

// tenantKey names a broker identity.
type tenantKey struct{ vhost, user string }

func (k tenantKey) String() string { return k.vhost + ":" + k.user }

// Errors of a login that are not the broker's refusal of the credentials.
var (
	errTooManyUsers = errors.New("bridge: too many users")
	errShuttingDown = errors.New("bridge: shutting down")
)

// tenantSet owns the logged-in tenants: at most auth.max_users at once,
// each opened once however many connections log in together, closed when
// idle or at shutdown.
type tenantSet struct {
	srv *Server

	mu     sync.Mutex
	m      map[tenantKey]*tenant // guarded by mu
	closed bool                  // guarded by mu
	wg     sync.WaitGroup        // idle closes under way
}

func newTenantSet(srv *Server) *tenantSet {
	return &tenantSet{srv: srv, m: make(map[tenantKey]*tenant)}
}

// login returns the tenant of key for a client that gave password, opening
// it (the broker checks the credentials) or joining it (the same password
// as the one the broker accepted, or, for another password, the broker's
// fresh approval of it). The caller releases the tenant when the
// connection ends. Errors: amqp.ErrLoginRefused (wrong credentials),
// errTooManyUsers, errShuttingDown, or the broker's trouble.
func (ts *tenantSet) login(ctx context.Context, key tenantKey, password string) (*tenant, error) {
	sum := sha256.Sum256([]byte(password))
	for {
		ts.mu.Lock()
		if ts.closed {
			ts.mu.Unlock()
			return nil, errShuttingDown
		}
		t := ts.m[key]
		if t == nil {
			if len(ts.m) >= ts.srv.cfg.Auth.MaxUsers {
				ts.mu.Unlock()
				return nil, errTooManyUsers
			}
			t = &tenant{key: key, passwordSum: sum, opened: make(chan struct{}), users: 1}
			ts.m[key] = t
			ts.mu.Unlock()
			err := ts.open(ctx, t, password)
			ts.mu.Lock()
			t.openErr = err
			close(t.opened)
			if err != nil {
				delete(ts.m, key)
				ts.mu.Unlock()
				return nil, err
			}
			ts.mu.Unlock()
			return t, nil
		}
		t.users++
		if t.idle != nil {
			t.idle.Stop()
			t.idle = nil
		}
		ts.mu.Unlock()

		select {
		case <-t.opened:
		case <-ctx.Done():
			ts.release(t)
			return nil, ctx.Err()
		}
		if t.openErr != nil {
			// That opening was someone else's (perhaps with another
			// password) and failed: try our own.
			continue
		}
		if subtle.ConstantTimeCompare(sum[:], t.passwordSum[:]) == 1 {
			return t, nil
		}
		// Another password than the one the tenant was opened with: only
		// the broker may say whether it is right (a changed password, or
		// a guess). The tenant keeps its own credentials either way.
		if err := ts.verify(ctx, key, password); err != nil {
			ts.release(t)
			return nil, err
		}
		return t, nil
	}
}

// open connects t's broker client with the user's credentials; the broker
// verifies them on every connection.
func (ts *tenantSet) open(ctx context.Context, t *tenant, password string) error {
	srv := ts.srv
	name := fmt.Sprintf("%s user=%s", srv.broker.ConnectionName(), t.key)
	broker, err := srv.broker.ForUser(t.key.user, password, t.key.vhost, name, tenantObserver{srv.obs})
	if err != nil {
		return err
	}
	if err := broker.Start(ctx); err != nil {
		return err
	}
	t.broker = broker
	t.queues = queues.NewTable(srv.cfg, broker)
	return nil
}

// verify asks the broker whether password is right for key, with a client
// of its own that is closed again at once.
func (ts *tenantSet) verify(ctx context.Context, key tenantKey, password string) error {
	srv := ts.srv
	name := fmt.Sprintf("%s login-check user=%s", srv.broker.ConnectionName(), key)
	check, err := srv.broker.ForUser(key.user, password, key.vhost, name, nil)
	if err != nil {
		return err
	}
	if err := check.Start(ctx); err != nil {
		return err
	}
	check.Close()
	return nil
}

// release ends one connection's use of t; the last one starts its idle
// clock.
func (ts *tenantSet) release(t *tenant) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t.users--
	if t.users > 0 || ts.closed || ts.m[t.key] != t {
		return
	}
	t.idleGen++
	gen := t.idleGen
	t.idle = time.AfterFunc(ts.srv.cfg.Auth.IdleClose, func() { ts.closeIdle(t, gen) })
}

// closeIdle closes t if it is still idle since the timer of generation
// gen started: a login that came meanwhile stopped or replaced it.
func (ts *tenantSet) closeIdle(t *tenant, gen uint64) {
	ts.mu.Lock()
	if ts.closed || t.idle == nil || t.idleGen != gen || t.users > 0 || ts.m[t.key] != t {
		ts.mu.Unlock()
		return
	}
	delete(ts.m, t.key)
	t.idle = nil
	ts.wg.Add(1)
	ts.mu.Unlock()
	defer ts.wg.Done()
	ts.srv.log.Debug("closing idle user's broker connections", "user", t.key.String())
	t.broker.Close()
	t.queues.Wait() // its stats refresh, if one runs, ends with the client
}

// count is how many tenants are open or opening now.
func (ts *tenantSet) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.m)
}

// queueCount is how many queues have state in the open tenants' tables
// (mcbridge_queues adds the amqp.urls user's).
func (ts *tenantSet) queueCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for _, t := range ts.m {
		select {
		case <-t.opened:
			if t.openErr == nil {
				n += t.queues.Len()
			}
		default:
		}
	}
	return n
}

// close closes every tenant, at the end of a shutdown when no connection
// is left; idle closes under way are waited for.
func (ts *tenantSet) close() {
	ts.mu.Lock()
	ts.closed = true
	var open []*tenant
	for _, t := range ts.m {
		if t.idle != nil {
			t.idle.Stop()
			t.idle = nil
		}
		select {
		case <-t.opened:
			if t.openErr == nil {
				open = append(open, t)
			}
		default:
			// Still opening: only a connection does that, and none is
			// left.
		}
	}
	clear(ts.m)
	ts.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.broker.Close()
			t.queues.Wait()
		}()
	}
	wg.Wait()
	ts.wg.Wait()
}

// tenantObserver receives a logged-in tenant's broker events. Only lost
// deliveries matter: the reservations on a dead channel are dropped as for
// the default broker. Connection state is not the gateway's health (that
// is the amqp.urls connections'), so it feeds no gauge.
type tenantObserver struct{ obs *Observer }

var _ amqp.Observer = tenantObserver{}

func (tenantObserver) ConnectionUp(amqp.Role, int, bool) {}
func (tenantObserver) Reconnected(amqp.Role)             {}
func (tenantObserver) Blocked(bool)                      {}
func (o tenantObserver) DeliveriesLost()                 { o.obs.DeliveriesLost() }
