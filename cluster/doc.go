// Package cluster proves that mcbridge scales out: its tests start a real
// three-node RabbitMQ cluster of their own on this machine (nodes
// mcbc-rmqa-…, mcbc-rmqb-… and mcbc-rmqc-… on free loopback ports, see
// internal/rabbitnode), run several in-process gateways against it with
// quorum queues, stop and restart a node under load, and tear the cluster
// down again. The package has no code of its own; see cluster_test.go.
//
// The tests need rabbitmq-server and rabbitmqctl (Debian: apt-get install
// rabbitmq-server; make test installs it). They never touch another
// broker: every rabbitmqctl call names its node with -n, and the nodes
// have their own Erlang cookie and epmd.
package cluster
