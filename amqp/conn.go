package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// dialTimeout bounds one TCP+AMQP handshake; amqp091-go's dial cannot be
// cancelled by a context.
const dialTimeout = 5 * time.Second

// closeTimeout bounds Connection.Close, which can hang on a blocked
// connection.
const closeTimeout = 2 * time.Second

// supervisor keeps one broker connection alive: it dials over the URLs with
// capped, jittered exponential backoff, calls onUp on every new connection
// and waits for it to close. It never uses amqp091-go's own recovery, so a
// channel object is never reused and a stale delivery tag can never ack
// another message.
type supervisor struct {
	role  Role
	index int
	opts  *Options
	log   *slog.Logger

	// onUp prepares a fresh connection (channels, topology). The goroutines
	// it starts must end when the connection closes; they join wg.
	onUp func(ctx context.Context, conn *amqp091.Connection, wg *sync.WaitGroup) error

	// wrap, when set, wraps each dialled TCP connection (below TLS).
	wrap func(net.Conn) net.Conn
	// beforeClose, when set, runs before a graceful close of the
	// connection, e.g. to send what is queued for it.
	beforeClose func()

	first     chan error // result of the first attempt, written once
	connected atomic.Bool
	reason    atomic.Pointer[string] // why it is down, for /readyz

	mu   sync.Mutex
	conn *amqp091.Connection // guarded by mu; nil while down
}

func newSupervisor(role Role, index int, opts *Options, onUp func(context.Context, *amqp091.Connection, *sync.WaitGroup) error) *supervisor {
	s := &supervisor{
		role:  role,
		index: index,
		opts:  opts,
		log:   opts.Logger.With("role", string(role), "conn", index),
		onUp:  onUp,
		first: make(chan error, 1),
	}
	r := "not connected yet"
	s.reason.Store(&r)
	return s
}

// current returns the live connection, or nil.
func (s *supervisor) current() *amqp091.Connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// downReason is nil while connected.
func (s *supervisor) downReason() error {
	if s.connected.Load() {
		return nil
	}
	return fmt.Errorf("%s connection %d: %s", s.role, s.index, *s.reason.Load())
}

func (s *supervisor) setDown(reason string) {
	s.mu.Lock()
	s.conn = nil
	s.mu.Unlock()
	s.reason.Store(&reason)
	if s.connected.Swap(false) {
		s.opts.Observer.ConnectionUp(s.role, s.index, false)
	}
}

// run owns the connection until ctx ends. It returns after the connection
// and every goroutine onUp started are gone.
func (s *supervisor) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()

	next := rand.IntN(len(s.opts.URLs))
	reported := false
	report := func(err error) {
		if !reported {
			reported = true
			s.first <- err
		}
	}
	defer report(ErrClosed)

	everUp := false
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return
		}
		conn, idx, err := s.dial(ctx, next)
		if err == nil {
			next = idx
			closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
			if err = s.onUp(ctx, conn, &wg); err == nil {
				attempt = -1
				s.mu.Lock()
				s.conn = conn
				s.mu.Unlock()
				s.connected.Store(true)
				s.opts.Observer.ConnectionUp(s.role, s.index, true)
				if everUp {
					s.opts.Observer.Reconnected(s.role)
				}
				everUp = true
				s.log.Info("broker connection up", "url", redact(s.opts.URLs[idx]))
				report(nil)
				select {
				case <-ctx.Done():
					s.setDown("shutting down")
					if s.beforeClose != nil {
						s.beforeClose()
					}
					_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
					return
				case cerr := <-closed:
					reason := "connection closed"
					if cerr != nil {
						reason = cerr.Error()
					}
					s.log.Warn("broker connection lost", "reason", reason)
					s.setDown(reason)
					// The old connection's goroutines end with it; wait
					// for them so that they never touch the slots that
					// the next connection's goroutines take over.
					wg.Wait()
					// The next URL first: the node we lost may be the one
					// that is down.
					next = (idx + 1) % len(s.opts.URLs)
					continue
				}
			}
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
			err = fmt.Errorf("set up %s connection: %w", s.role, err)
		}
		s.setDown(err.Error())
		report(err)
		var terr *TopologyError
		switch {
		case errors.As(err, &terr):
			s.log.Error("broker rejected topology", "err", err)
		case errors.Is(err, ErrLoginRefused) && s.opts.StrictStart:
			// A client's wrong password (a client opened for a login):
			// its login says so; no warning for each guess.
			s.log.Info("broker refused the login", "err", err)
		default:
			s.log.Warn("broker connection failed", "err", err, "attempt", attempt+1)
		}
		if !sleepCtx(ctx, backoff(attempt, s.opts.MinBackoff, s.opts.MaxBackoff)) {
			return
		}
	}
}

// dial tries every URL once, starting at start. It gives up as soon as ctx
// ends: a shutdown must not wait for a handshake with a broker that does
// not answer.
func (s *supervisor) dial(ctx context.Context, start int) (*amqp091.Connection, int, error) {
	var errs []error
	n := len(s.opts.URLs)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, start, err
		}
		idx := (start + i) % n
		props := amqp091.NewConnectionProperties()
		props.SetClientConnectionName(fmt.Sprintf("%s %s %d", s.opts.ConnectionName, s.role, s.index))
		conn, err := amqp091.DialConfig(s.dialURL(idx), amqp091.Config{
			Heartbeat: s.opts.Heartbeat,
			// A copy per dial: amqp091-go writes the URL's host into an
			// empty ServerName, which would race between connections and
			// pin every later dial (another cluster node) to the first
			// host's name.
			TLSClientConfig: s.opts.TLS.Clone(),
			Properties:      props,
			Dial:            s.dialer(ctx),
		})
		if err == nil {
			return conn, idx, nil
		}
		// amqp091-go errors may quote the URL; never let a password out.
		derr := fmt.Errorf("dial %s: %s", redact(s.opts.URLs[idx]), redactErr(err, s.opts.URLs[idx]))
		if loginRefused(err) {
			// The broker checked the credentials and said no: another
			// node of the cluster shares its users and would say the same.
			return nil, start, fmt.Errorf("%w: %w", ErrLoginRefused, derr)
		}
		errs = append(errs, derr)
	}
	return nil, start, errors.Join(errs...)
}

// loginRefused reports a connection the broker refused for its user:
// a bad user name or password (403 ACCESS_REFUSED at connection.start-ok),
// or no access to the vhost, or no such vhost (530 NOT_ALLOWED at
// connection.open, whose text names the vhost; the same code for a reached
// connection limit is not a login refusal).
func loginRefused(err error) bool {
	var aerr *amqp091.Error
	if !errors.As(err, &aerr) {
		return false
	}
	switch aerr.Code {
	case amqp091.AccessRefused:
		return true
	case amqp091.NotAllowed:
		return strings.Contains(aerr.Reason, "vhost") && !strings.Contains(aerr.Reason, "limit")
	}
	return false
}

// dialURL is the idx-th URL, asking for the broker's heartbeat when told
// to: amqp091-go turns a zero Config.Heartbeat into its 10 s default, and
// only the URL's heartbeat=0 leaves the choice to the broker.
func (s *supervisor) dialURL(idx int) string {
	raw := s.opts.URLs[idx]
	if s.opts.Heartbeat >= 0 {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return raw // DialConfig reports it
	}
	q := u.Query()
	if !q.Has("heartbeat") {
		q.Set("heartbeat", "0")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// dialer connects for amqp091-go as its DefaultDial does (a deadline on
// the TCP, TLS and AMQP handshakes, which the library clears once the
// connection is open), and cancellably: when ctx ends during the
// handshake, the deadline is moved to now and the handshake fails at once.
func (s *supervisor) dialer(ctx context.Context) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: dialTimeout}
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := raw.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
			raw.Close()
			return nil, err
		}
		var c net.Conn = &cancellableHandshake{Conn: raw, stop: context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })}
		if s.wrap != nil {
			c = s.wrap(c)
		}
		return c, nil
	}
}

// cancellableHandshake stops cancelling the connection once amqp091-go
// clears the handshake deadline: from then on the connection is open and
// belongs to the supervisor.
type cancellableHandshake struct {
	net.Conn
	stop func() bool
}

func (c *cancellableHandshake) SetDeadline(t time.Time) error {
	if t.IsZero() {
		c.stop()
	}
	return c.Conn.SetDeadline(t)
}

// backoff is capped exponential with full jitter: min·2^attempt, at most
// max, then a random point in its upper half so that gateways restarted
// together do not reconnect in lockstep.
func backoff(attempt int, minD, maxD time.Duration) time.Duration {
	d := maxD
	if attempt < 30 {
		if e := minD << attempt; e > 0 && e < maxD {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(half+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// redact hides the password of an AMQP URL.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable url>"
	}
	return u.Redacted()
}

func redactErr(err error, raw string) string {
	msg := err.Error()
	u, perr := url.Parse(raw)
	if perr != nil || u.User == nil {
		return msg
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		msg = strings.ReplaceAll(msg, raw, u.Redacted())
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}
