package amqp

import "errors"

// Errors a caller maps to replies. Every one of them means the message's fate
// is either "not stored" (ErrUnroutable, ErrNacked) or "unknown / broker
// unusable" (the rest).
var (
	// ErrNotConnected: no usable connection or channel right now.
	ErrNotConnected = errors.New("amqp: not connected")
	// ErrBlocked: the broker raised a resource alarm and blocks publishing.
	ErrBlocked = errors.New("amqp: broker blocked publishing")
	// ErrUnroutable: the broker returned the mandatory message (basic.return).
	ErrUnroutable = errors.New("amqp: message unroutable")
	// ErrNacked: the broker nacked the message on a live channel (e.g. a full
	// queue with overflow reject-publish).
	ErrNacked = errors.New("amqp: message nacked")
	// ErrConfirmTimeout: no confirm arrived within the confirm timeout; the
	// message may or may not be stored.
	ErrConfirmTimeout = errors.New("amqp: confirm timed out")
	// ErrChannelClosed: the channel closed while the publish awaited its
	// confirm; the outcome is unknown.
	ErrChannelClosed = errors.New("amqp: channel closed before confirm")
	// ErrStale: the delivery's channel is gone; the broker has requeued it
	// and it must never be acked (its tag may now mean another message).
	ErrStale = errors.New("amqp: delivery is stale")
	// ErrSettled: the delivery was already acked or requeued.
	ErrSettled = errors.New("amqp: delivery already settled")
	// ErrAccessRefused: the broker refused the operation for the user the
	// client connected as (ACCESS_REFUSED, 403: no configure, write or read
	// permission on that queue or exchange). The operation did nothing.
	ErrAccessRefused = errors.New("amqp: access refused")
	// ErrLoginRefused: the broker refused to open a connection with the
	// client's credentials: wrong user or password (403), or no access to
	// the vhost (530 naming the vhost).
	ErrLoginRefused = errors.New("amqp: login refused")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("amqp: client closed")
	// ErrQueueLimit: the broker refused to create a queue because its
	// vhost (or cluster) queue limit is reached; the queue does not exist.
	ErrQueueLimit = errors.New("amqp: broker queue limit reached")
	// errTooManyConsumers: a consume connection has all the consumer
	// channels it may; the queue is served with basic.get.
	errTooManyConsumers = errors.New("amqp: consumer channels all in use")
)
