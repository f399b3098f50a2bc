// Package bridge joins the memcache protocol to the broker: each client
// connection gets a session whose commands become publishes, reservations,
// acks and requeues. mcproto knows the bytes, amqp knows RabbitMQ; bridge
// knows what a memcache command means on a queue.
//
// How a command travels, file by file:
//
//	server.go       Server: the accept loop, the connection limit, graceful shutdown
//	conn.go         one connection: reads with deadlines, flushes replies, closes
//	watch.go        a wait (kestrel's /t=) that ends when its client goes away
//	text.go         the framings: each reads its requests, runs them as session
//	binary.go         operations and spells their outcomes in its own bytes;
//	meta.go           meta commands ride on the text loop
//	session.go      the operations (set, get, delete, ackByID, touch, ...): one
//	                connection's reservations, each operation counted once
//	outcome.go      what an operation came to, and the one place it is counted
//	reservation.go  a message held by a client: ids, the registry, settling, leases
//	message.go      memcache items as AMQP messages: flags, exptime, leases
//	stats.go        the stats listings, as (name, value) pairs
//	observer.go     broker events: metrics, and reservations lost with a channel
//	auth.go         logins (auth.mode broker): the text -Y set, SASL PLAIN
//	tenant.go       a user's own broker client and queue table, shared and idle-closed
//	throttle.go     failed logins slow their client address
//
// Below it, internal/queues says which queue or exchange a key means and
// keeps what this instance knows of each queue; internal/metrics holds the
// Prometheus series. authtest tests logins against a broker with users of
// its own.
package bridge
