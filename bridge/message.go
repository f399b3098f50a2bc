package bridge

import (
	"math"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
)

// How memcache items map onto AMQP messages: flags in a header, exptime as
// a per-message TTL, touch and gat exptimes as leases.

// flagsHeader carries memcache flags through RabbitMQ as a signed 64-bit
// integer, which every AMQP client can read and write.
const flagsHeader = "x-mc-flags"

// flagsFrom reads memcache flags from the message headers. A missing,
// non-integer or out-of-range value (memcache flags are 32-bit unsigned)
// reads as 0, so messages from any AMQP publisher can be fetched.
func flagsFrom(h amqp.Table) uint32 {
	var n int64
	switch v := h[flagsHeader].(type) {
	case int64:
		n = v
	case int32:
		n = int64(v)
	case int16:
		n = int64(v)
	case int8:
		n = int64(v)
	case int:
		n = int64(v)
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	case uint64:
		if v > math.MaxUint32 {
			return 0
		}
		n = int64(v)
	default:
		return 0
	}
	if n < 0 || n > math.MaxUint32 {
		return 0
	}
	return uint32(n)
}

// relativeLimit: memcached reads an exptime up to 30 days as seconds from
// now, anything larger as a unix time.
const relativeLimit = 30 * 24 * 60 * 60

// expiration turns a set's exptime into a per-message TTL (0 = none).
// expired means the item is dead on arrival.
func expiration(exptime int64, now time.Time) (ttl time.Duration, expired bool) {
	switch {
	case exptime == 0:
		return 0, false
	case exptime < 0:
		return 0, true
	case exptime <= relativeLimit:
		return time.Duration(exptime) * time.Second, false
	default:
		d := time.Unix(exptime, 0).Sub(now)
		if d < time.Millisecond {
			return 0, true
		}
		return d, false
	}
}

// leaseFor turns a touch/gat exptime into a lease.
func leaseFor(exptime int64, queueDefault time.Duration, now time.Time) (lease time.Duration, requeue bool) {
	if exptime == 0 {
		return queueDefault, false
	}
	d, expired := expiration(exptime, now)
	if expired {
		return 0, true
	}
	return d, false
}

// leaseAsk is the lease a retrieval asks for its reservation (gat's
// exptime, mg's T). The zero value asks for the queue's
// reservation_timeout.
type leaseAsk struct {
	d   time.Duration
	set bool
	// peek: the lease is over before it starts (a negative exptime or a
	// past unix time), so the message is handed out and put straight
	// back.
	peek bool
}

// leaseFromExptime is the lease of a gat, binary GAT or mg T.
func leaseFromExptime(exptime int64) leaseAsk {
	d, requeue := leaseFor(exptime, 0, time.Now())
	return leaseAsk{d: d, set: exptime != 0, peek: requeue}
}
