// Package cluster proves that mcbridge scales out: its tests start a real
// three-node RabbitMQ cluster on this machine (nodes rmqa, rmqb and rmqc on
// 127.0.0.1:5701-5703), run several in-process gateways against it with
// quorum queues, stop and restart a node under load, and tear the cluster
// down again. The package has no code of its own; see cluster_test.go.
//
// The tests need rabbitmq-server and rabbitmqctl (Debian: apt-get install
// rabbitmq-server) and run as root, like .ci/run. They never touch the
// machine's default node (rabbit@localhost on 5672): every rabbitmqctl call
// names its node with -n.
package cluster
