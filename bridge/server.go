package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/bridge/internal/queues"
	"github.com/mcbridge/mcbridge/config"
)

// Version is reported by the version command and stats.
var Version = "1.0.0-dev"

// Server is the memcache-protocol front of the gateway.
type Server struct {
	cfg     *config.Config
	broker  *amqp.Client
	log     *slog.Logger
	metrics *metrics.Metrics
	queues  *queues.Table
	obs     *Observer
	// defaultTenant is the amqp.urls user (broker, queues); tenants are
	// the users logged in under auth.mode broker; throttle slows the
	// logins of addresses that failed recently.
	defaultTenant *tenant
	tenants       *tenantSet
	throttle      *loginThrottle
	registry      *registry
	ids           *idSource
	pending       *pendingBytes
	stats         counters
	started       time.Time

	// ctx is cancelled at the end of a graceful shutdown; commands in flight
	// use it for broker calls.
	ctx    context.Context
	cancel context.CancelFunc

	// Warnings that a fault could repeat for every command are limited
	// to one line per interval.
	publishFailLog, refusedLog, flushAllLog logLimiter
	// Queues refused: by limits.max_queues, by the broker's queue limit.
	maxQueuesLog, brokerQueueLimitLog logLimiter

	mu       sync.Mutex
	ln       net.Listener       // guarded by mu
	conns    map[*conn]struct{} // guarded by mu
	draining bool               // guarded by mu
	wg       sync.WaitGroup     // connection goroutines, and refusals being written
	// refusing counts refusals being written (see maxRefusing).
	refusing atomic.Int32
}

// Options for New.
type Options struct {
	Logger *slog.Logger
}

// New returns a server for cfg. Wire its Observer into the amqp options
// before creating broker (see NewObserver), then call Serve.
func New(cfg *config.Config, broker *amqp.Client, obs *Observer, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:      cfg,
		broker:   broker,
		log:      log.With("component", "bridge"),
		metrics:  obs.metrics,
		queues:   queues.NewTable(cfg, broker),
		obs:      obs,
		throttle: newLoginThrottle(),
		registry: newRegistry(),
		ids:      newIDSource(),
		pending:  newPendingBytes(int64(cfg.Limits.MaxPendingBytes), obs.metrics.PendingBytes),
		started:  time.Now(),
		ctx:      ctx,
		cancel:   cancel,
		conns:    make(map[*conn]struct{}),
	}
	s.defaultTenant = &tenant{broker: broker, queues: s.queues, opened: make(chan struct{})}
	close(s.defaultTenant.opened)
	s.tenants = newTenantSet(s)
	obs.metrics.Configure(cfg)
	obs.metrics.CountQueues(func() int { return s.queues.Len() + s.tenants.queueCount() })
	obs.srv.Store(s)
	return s
}

// Listen opens the configured listening socket.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	return ln, nil
}

// Serve accepts connections on ln until Shutdown. It returns nil after a
// shutdown, else the accept error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()

	var tempDelay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			draining := s.draining
			s.mu.Unlock()
			if draining {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: back off rather
				// than spin, as net/http does.
				if tempDelay == 0 {
					tempDelay = 5 * time.Millisecond
				} else {
					tempDelay = min(2*tempDelay, time.Second)
				}
				s.log.Warn("accept failed; retrying", "err", err, "delay", tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		tempDelay = 0
		s.accept(nc)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// logFlushAll notes a flush_all, which mcbridge ignores; at most one line a
// minute, since clients and test suites send it in loops.
func (s *Server) logFlushAll(remote net.Addr) {
	if s.flushAllLog.allow(time.Minute) {
		s.log.Info("flush_all ignored: mcbridge never deletes messages", "remote", remote.String())
	}
}

// logLimiter lets one log line through per interval.
type logLimiter struct{ next atomic.Int64 }

func (l *logLimiter) allow(every time.Duration) bool {
	now := time.Now().UnixNano()
	n := l.next.Load()
	return now >= n && l.next.CompareAndSwap(n, now+int64(every))
}

// Addr is the listening address (useful with 127.0.0.1:0).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// tooManyConnections is memcached's own reply when it is full.
const tooManyConnections = "ERROR Too many open connections\r\n"

// Refusals past max_connections are written off the accept goroutine, each
// within refuseTimeout (on a TLS listener the write first runs the
// handshake, which a silent client would stall forever), and at most
// maxRefusing at once: past that a refused connection is closed without
// the reply, so a flood costs neither goroutines nor handshakes.
const (
	refuseTimeout = time.Second
	maxRefusing   = 64
)

// accept starts serving nc, or refuses it. It does no client I/O: the
// accept loop must never wait on a client.
func (s *Server) accept(nc net.Conn) {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if len(s.conns) >= s.cfg.Limits.MaxConnections {
		reply := s.refusing.Add(1) <= maxRefusing
		if reply {
			// Added under mu, as for connections: Shutdown waits for it.
			s.wg.Add(1)
		} else {
			s.refusing.Add(-1)
		}
		s.mu.Unlock()
		s.stats.rejectedConns.Add(1)
		s.metrics.LimitRefused(metrics.LimitMaxConnections)
		if s.refusedLog.allow(10 * time.Second) {
			s.log.Warn("connections refused: max_connections reached", "remote", nc.RemoteAddr().String(), "max", s.cfg.Limits.MaxConnections, "refused_total", s.stats.rejectedConns.Load())
		}
		if !reply {
			nc.Close()
			return
		}
		go func() {
			defer s.wg.Done()
			defer s.refusing.Add(-1)
			_ = nc.SetDeadline(time.Now().Add(refuseTimeout))
			_, _ = nc.Write([]byte(tooManyConnections))
			nc.Close()
		}()
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()

	s.stats.totalConns.Add(1)
	s.stats.currConns.Add(1)
	s.metrics.Connections.Inc()
	s.metrics.ConnectionsTotal.Inc()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			s.stats.currConns.Add(-1)
			s.metrics.Connections.Dec()
		}()
		c.serve()
	}()
}

// Shutdown stops accepting, lets every connection finish the command in
// hand, requeues what clients still hold, and returns when all connections
// are gone or ctx ends (then the rest are closed hard).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.drain()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.cancel()
	// A stats count read still under way ends now that ctx is over.
	s.queues.Wait()
	// Connections requeue on their way out; this catches any reservation
	// whose owner raced the shutdown.
	for _, r := range s.registry.all() {
		if r.end() {
			s.settle(r, settleRequeue, metrics.ReasonShutdown)
		}
	}
	// No connection is left to use the users' broker connections.
	s.tenants.close()
	return err
}

// Topology is everything the YAML declares, for amqp.Options.
func Topology(cfg *config.Config) amqp.Topology { return queues.Topology(cfg) }
