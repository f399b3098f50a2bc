package bridge

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/bridge/internal/queues"
)

// reservation is a message handed to a client and not yet acked: the
// redqueue model, where get reserves and delete acks. Exactly one of ack,
// requeue or drop ends it; end arbitrates between the owner's delete, an ack
// by id from another connection, the lease timer and a disconnect.
type reservation struct {
	id       uint64
	queue    *queues.Queue
	owner    *session
	delivery *amqp.Delivery
	flags    uint32
	body     []byte

	ended atomic.Bool
	timer *time.Timer // the lease; set once before the reservation is published
}

// end claims the reservation for the one caller that settles it.
func (r *reservation) end() bool { return r.ended.CompareAndSwap(false, true) }

// describe is what a reply may tell of the reservation: its id (the cas),
// flags and body.
func (r *reservation) describe() *item {
	return &item{flags: r.flags, body: r.body, cas: r.id}
}

// capLease shortens lease so that the reservation ends before the broker's
// consumer_timeout, which counts from the delivery, not from now: past it
// the broker closes the whole channel, dropping every reservation on it.
func (r *reservation) capLease(lease time.Duration, now time.Time) time.Duration {
	return min(lease, r.delivery.DeliveredAt.Add(r.owner.srv.cfg.AMQP.LeaseCap()).Sub(now))
}

// settle modes.
const (
	settleAck     = iota // basic.ack
	settleRequeue        // basic.reject(requeue)
	settleDrop           // nothing to send: the channel is gone
)

// settle ends a reservation that the caller won with r.end(). It reports
// whether the broker was told (for an ack: whether DELETED is true).
//
// A requeue is back in the queue before the reservation leaves its
// connection: until then a get of the queue on that connection is a miss,
// and after it the get returns the message given back.
func (s *Server) settle(r *reservation, mode int, reason string) bool {
	r.timer.Stop()
	told := false
	switch mode {
	case settleAck:
		if err := r.delivery.Ack(); err != nil {
			s.log.Debug("ack of stale reservation not sent", "queue", r.queue.Name, "err", err)
		} else {
			r.queue.Acked.Add(1)
			told = true
		}
	case settleRequeue:
		// An error means stale: the broker requeued it already when the
		// channel died.
		requeue := r.delivery.Requeue
		if reason == metrics.ReasonShutdown {
			requeue = r.delivery.RequeueNow
		}
		if told = requeue() == nil; told {
			s.metrics.Requeued.WithLabelValues(r.queue.Label, reason).Inc()
		}
	case settleDrop:
		r.delivery.Forget()
	}
	s.registry.remove(r)
	r.owner.forget(r)
	r.queue.Open.Add(-1)
	s.metrics.ReservationsOpen.WithLabelValues(r.queue.Label).Dec()
	return told
}

// expire is the lease timer's end.
func (s *Server) expire(r *reservation) {
	if r.end() {
		s.log.Debug("reservation lease ended; requeued", "queue", r.queue.Name, "id", r.id)
		s.settle(r, settleRequeue, metrics.ReasonTimeout)
	}
}

// idSource hands out reservation ids (the cas unique of gets). A random
// 64-bit start per process makes ids from restarts and other instances
// practically disjoint; a redelivered message gets a fresh id, so a dead
// reservation's id never matches again.
type idSource struct{ n atomic.Uint64 }

func newIDSource() *idSource {
	var b [8]byte
	_, _ = rand.Read(b[:])
	s := &idSource{}
	// Keep the top bit clear so that a few billion ids never wrap to 0.
	s.n.Store(binary.LittleEndian.Uint64(b[:]) >> 1)
	return s
}

func (s *idSource) next() uint64 { return s.n.Add(1) }

// registry finds live reservations by id, for acks from any connection
// (gomemcache's CompareAndSwap, meta md C<id>, binary DELETE with cas).
type registry struct {
	mu   sync.Mutex
	byID map[uint64]*reservation // guarded by mu
}

func newRegistry() *registry {
	return &registry{byID: make(map[uint64]*reservation)}
}

func (g *registry) add(r *reservation) {
	g.mu.Lock()
	g.byID[r.id] = r
	g.mu.Unlock()
}

func (g *registry) remove(r *reservation) {
	g.mu.Lock()
	if g.byID[r.id] == r {
		delete(g.byID, r.id)
	}
	g.mu.Unlock()
}

func (g *registry) get(id uint64) *reservation {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byID[id]
}

// stale returns the live reservations whose channel is gone.
func (g *registry) stale() []*reservation {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*reservation
	for _, r := range g.byID {
		if r.delivery.Stale() {
			out = append(out, r)
		}
	}
	return out
}

// all returns every live reservation.
func (g *registry) all() []*reservation {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*reservation, 0, len(g.byID))
	for _, r := range g.byID {
		out = append(out, r)
	}
	return out
}

// count is the number of live reservations.
func (g *registry) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.byID)
}
