package amqp

import (
	"bytes"
	"unicode/utf8"
)

// maxShortString is AMQP's short-string limit, which queue names, exchange
// names and routing keys are.
const maxShortString = 255

// ValidName reports whether name can go to the broker as a queue name or a
// routing key. RabbitMQ closes the whole connection (FRAME_ERROR) on a short
// string that is not UTF-8, and refuses to declare a name starting with
// "amq." (ACCESS_REFUSED, closing the channel): both would cost every other
// client on that connection or channel its reservations. Callers check a
// name before any broker call.
func ValidName(name []byte) bool {
	return len(name) > 0 && len(name) <= maxShortString && utf8.Valid(name) &&
		!bytes.HasPrefix(name, []byte("amq."))
}
