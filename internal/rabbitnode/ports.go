package rabbitnode

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
)

// Ports are drawn from below Linux's ephemeral range (32768-60999 by
// default): an ephemeral port may be taken as the local end of any
// outgoing connection, and a node that restarts (StopNode, then
// StartNode) must find its port free again.
const (
	portMin = 20000
	portMax = 32000 // exclusive
)

// reservedPorts are never handed out: RabbitMQ's defaults (AMQP, its
// distribution port, the management UI, epmd) and the fixed ports that
// older cluster tests on the same machine may still use.
var reservedPorts = map[int]bool{
	4369: true, 5672: true, 15672: true, 25672: true,
	5701: true, 5702: true, 5703: true,
	25701: true, 25702: true, 25703: true,
}

// freePort returns a port in [portMin, portMax) that nothing listens on
// now (on 127.0.0.1 or any address) and that is not in taken. Another
// process may take it before the node binds it: Node.Start then picks
// other ports and tries again.
func freePort(taken map[int]bool) (int, error) {
	for range 200 {
		p := portMin + rand.IntN(portMax-portMin)
		if reservedPorts[p] || taken[p] {
			continue
		}
		ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		taken[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free TCP port in %d-%d after 200 tries", portMin, portMax-1)
}
