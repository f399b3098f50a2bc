// Package amqp owns every interaction of mcbridge with RabbitMQ: the
// supervised connections (one for publishing, one or more for consuming,
// because a memory alarm blocks publishers while acks must still flow),
// publishing with publisher confirms, fetching deliveries for reservations,
// and declaring topology.
//
// It knows RabbitMQ and nothing of memcache: callers hand it exchanges,
// routing keys, queue specs and bodies, and get back deliveries that they can
// ack or requeue exactly once, on the channel that delivered them.
package amqp
