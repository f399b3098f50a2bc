package bridge

import (
	"errors"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge/internal/metrics"
	"github.com/mcbridge/mcbridge/mcproto"
)

// An outcome is what one command came to, whatever framing carried it. The
// session decides it and counts it (Server.count); each framing only spells
// it (text.go, binary.go, meta.go), as memcached's proto_text.c and
// proto_bin.c spell the results of the same item operations.
type outcome struct {
	kind outcomeKind
	// msg is a server error's reason, which the client is told.
	msg string
}

// outcomeKind is the fixed set of outcomes. Its String is the result label
// of mcbridge_commands_total.
type outcomeKind uint8

const (
	outHit             outcomeKind = iota // a retrieval handed out a message; mg: this connection holds one
	outMiss                               // nothing to hand out (empty or unknown queue, reservation already held)
	outStored                             // set: confirmed by the broker; cas: the reservation acked
	outNotStored                          // the broker returned or nacked the message
	outDeleted                            // the reservation acked
	outNotFound                           // no such reservation
	outTouched                            // the reservation's lease set
	outOK                                 // a command without a queue result (version, stats, flush_all, ...)
	outUnknownCommand                     // not a memcache command: ERROR
	outBadRequest                         // a key or line the command cannot take: CLIENT_ERROR bad command line format
	outNotSupported                       // a memcache command that means nothing on a queue (add, incr, ...)
	outTooLarge                           // a value over max_item_size
	outUnauthenticated                    // auth.mode broker: the connection has not logged in
	outAccessRefused                      // the broker refused the user this operation (403): nothing done
	outServerError                        // the outcome is unknown or the broker unusable; msg says why
)

var outcomeResults = [...]string{
	outHit:             "hit",
	outMiss:            "miss",
	outStored:          "stored",
	outNotStored:       "not_stored",
	outDeleted:         "deleted",
	outNotFound:        "not_found",
	outTouched:         "touched",
	outOK:              "ok",
	outUnknownCommand:  "error",
	outBadRequest:      "client_error",
	outNotSupported:    "client_error",
	outTooLarge:        "server_error",
	outServerError:     "server_error",
	outUnauthenticated: "client_error",
	outAccessRefused:   "client_error",
}

// String is the result label value.
func (k outcomeKind) String() string { return outcomeResults[k] }

// Outcomes without a message.
var (
	hit             = outcome{kind: outHit}
	miss            = outcome{kind: outMiss}
	stored          = outcome{kind: outStored}
	notStored       = outcome{kind: outNotStored}
	deleted         = outcome{kind: outDeleted}
	notFound        = outcome{kind: outNotFound}
	touched         = outcome{kind: outTouched}
	served          = outcome{kind: outOK}
	unknownCmd      = outcome{kind: outUnknownCommand}
	badRequest      = outcome{kind: outBadRequest}
	notSupported    = outcome{kind: outNotSupported}
	tooLarge        = outcome{kind: outTooLarge}
	unauthenticated = outcome{kind: outUnauthenticated}
	accessRefused   = outcome{kind: outAccessRefused}
	// tooManyQueues: a set would make a new queue past a queue limit.
	tooManyQueues = outcome{kind: outServerError, msg: "too many queues"}
)

// serverError is the outcome of a command whose result is unknown or whose
// broker is unusable.
func serverError(msg string) outcome { return outcome{kind: outServerError, msg: msg} }

// brokerOutcome turns an amqp error into what the client is told.
func brokerOutcome(err error) outcome {
	switch {
	case errors.Is(err, amqp.ErrUnroutable), errors.Is(err, amqp.ErrNacked):
		return notStored
	case errors.Is(err, amqp.ErrAccessRefused):
		return accessRefused
	case errors.Is(err, amqp.ErrBlocked):
		return serverError("broker blocked publishing (resource alarm)")
	case errors.Is(err, amqp.ErrConfirmTimeout):
		return serverError("broker confirm timed out")
	case errors.Is(err, amqp.ErrBrokerTimeout):
		return serverError("broker did not answer in time")
	case errors.Is(err, amqp.ErrChannelClosed):
		return serverError("broker channel lost before confirm")
	case errors.Is(err, amqp.ErrNotConnected), errors.Is(err, amqp.ErrClosed):
		return serverError("broker not connected")
	default:
		var terr *amqp.TopologyError
		if errors.As(err, &terr) {
			return serverError("broker refused queue declaration")
		}
		return serverError("broker error")
	}
}

// readOutcome is the outcome of a text command the parser refused.
func readOutcome(err error) outcome {
	switch {
	case errors.Is(err, mcproto.ErrUnknownCommand):
		return unknownCmd
	case errors.Is(err, mcproto.ErrTooLarge):
		return tooLarge
	default:
		return badRequest
	}
}

// tally is the family of memcached's general stats an operation counts in.
type tally uint8

const (
	tallyNone   tally = iota
	tallyGet          // cmd_get, get_hits, get_misses: once per key
	tallySet          // cmd_set
	tallyTouch        // cmd_touch, touch_hits, touch_misses
	tallyDelete       // delete_hits, delete_misses: every ack (delete, cas, md, binary delete)
)

// count is the one place that counts commands: memcached's general stats
// in the operation's family (a command refused for its key counts in none,
// as in memcached) and mcbridge_commands_total under the text protocol's
// command word, so that a dashboard sums every framing of an operation. It
// returns o.
func (s *Server) count(cmd mcproto.Op, t tally, o outcome) outcome {
	s.countAs(cmd.String(), t, o)
	return o
}

// countAs is count under a label that is not a command word (a line that
// could not be read is "invalid").
func (s *Server) countAs(label string, t tally, o outcome) {
	if o.kind != outBadRequest && o.kind != outUnauthenticated {
		cmds, hits, misses := s.stats.family(t)
		if cmds != nil {
			cmds.Add(1)
		}
		switch o.kind {
		case outHit, outStored, outDeleted, outTouched:
			if hits != nil {
				hits.Add(1)
			}
		case outMiss, outNotFound:
			if misses != nil {
				misses.Add(1)
			}
		}
	}
	if o.kind == outTooLarge {
		// A value over max_item_size is the only way to this outcome.
		s.metrics.LimitRefused(metrics.LimitMaxItemSize)
	}
	s.metrics.Commands.WithLabelValues(label, o.kind.String()).Inc()
}
