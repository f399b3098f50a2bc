// Package rabbitnode starts private RabbitMQ nodes for tests and makes sure
// none outlives the test process that started it.
//
// A Host is the private world of one test process: a directory under
// os.TempDir holding an Erlang cookie of its own, an epmd port of its own,
// and one directory per node (mnesia, log, rabbitmq.conf, enabled_plugins).
// Its nodes run RabbitMQ's own start script directly, as the current user,
// in the foreground, with every setting in the environment or in those
// files; the machine's RabbitMQ installation provides the code and nothing
// else: neither its node, nor its cookie (~rabbitmq/.erlang.cookie may not
// exist on a machine where the default broker never ran), nor its
// rabbitmq-env.conf, nor its epmd.
//
// Every process of a host (the start script, the Erlang VM, its epmd, the
// rabbitmqctl runs) carries the host's directory in the environment
// variable MCBRIDGE_RABBITNODE_HOST. That is how the host finds them again:
// Close stops the nodes gracefully and then ends whatever is left; a
// watchdog process, which outlives a test process that panics, times out
// or is killed with SIGKILL, does the same when the test process is gone;
// and NewHost reaps what hosts of dead test processes left behind (their
// watchdog was killed too).
package rabbitnode
