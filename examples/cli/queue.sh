#!/bin/sh
# The libmemcached command-line tools (Debian: libmemcached-tools) against mcbridge.
#
#   queue.sh produce SERVERS QUEUE COUNT   enqueue COUNT jobs with memccp
#   queue.sh consume SERVERS QUEUE [MAX]   take jobs with memccat until the queue is empty
#   queue.sh stats   SERVERS               memcstat: queue_<q>_items and friends
#
# SERVERS is host:port[,host:port...]. Set MEMC_OPTS=--binary to use the
# binary protocol.
#
# Every tool run is one connection, and mcbridge requeues a reservation when
# its connection closes: memccat's get reserves a job, memccat exits, and
# the job goes back to the queue. So memccat can only consume from a queue
# with `ack: auto` (destructive get, as memcacheq). On a manual-ack queue
# (the default) it would get the same job back forever, and no command-line
# tool can delete it, since only the connection that got a job may delete
# it. consume therefore reads the gateways' `stats settings` first and
# refuses a manual-ack queue (exit 3), saying what to use instead.
set -eu
cmd=$1 servers=$2

# ack_mode QUEUE prints "auto" or "manual", as the gateways run the queue:
# its own ack where their config lists it (queues.<q>.ack), else
# defaults.ack (an auto-declared queue); "manual" if any gateway says so;
# nothing if none answered.
ack_mode() {
	# shellcheck disable=SC2086 # MEMC_OPTS holds options, one word each
	memcstat ${MEMC_OPTS:-} --servers="$servers" settings 2>/dev/null | awk -v own_key="queues.$1.ack:" '
		function settle() {
			if (!in_server) return
			mode = own != "" ? own : def
			if (mode == "manual" || result == "") result = mode
			own = ""; def = ""
		}
		/^Server:/ { settle(); in_server = 1; next }
		$1 == own_key { own = $2 }
		$1 == "defaults.ack:" { def = $2 }
		END { settle(); print result }'
}

case $cmd in
produce)
	queue=$3 count=$4
	dir=$(mktemp -d)
	trap 'rm -rf "$dir"' EXIT
	i=1
	while [ "$i" -le "$count" ]; do
		# memccp stores a file under its base name: the file is named after the queue.
		printf '{"id":%d,"body":"payload %d "}' "$i" "$i" >"$dir/$queue"
		memccp ${MEMC_OPTS:-} --servers="$servers" --flags=0 "$dir/$queue"
		echo "stored $i"
		i=$((i + 1))
	done
	;;
consume)
	queue=$3 max=${4:-0} done=0
	# A key may carry kestrel options (jobs/t=500): the queue is before the /.
	name=${queue%%/*}
	case $(ack_mode "$name") in
	auto) ;;
	manual)
		cat >&2 <<EOF
queue.sh: $name is a manual-ack queue: a job is acked only by a delete on the connection
that got it, and memccat closes its connection after each get, which puts the job back.
consume would get the same job forever, so it stops here, having taken nothing. Consume
it with a client that keeps its connection and deletes each job (examples/go/worker,
examples/python/worker.py, ...), or give the queue ack: auto in the gateway's config
(defaults.ack: auto for auto-declared queues).
EOF
		exit 3
		;;
	*)
		echo "queue.sh: no gateway in $servers answered 'stats settings' (memcstat), so whether $name is an auto-ack queue is unknown" >&2
		exit 1
		;;
	esac
	while [ "$max" -eq 0 ] || [ "$done" -lt "$max" ]; do
		# A miss makes memccat fail ("NOT FOUND" on stderr): the queue is empty.
		job=$(memccat ${MEMC_OPTS:-} --servers="$servers" "$queue" 2>/dev/null) || break
		echo "consumed $job"
		done=$((done + 1))
	done
	;;
stats)
	memcstat ${MEMC_OPTS:-} --servers="$servers"
	;;
*)
	echo "usage: $0 produce|consume|stats SERVERS [QUEUE [COUNT|MAX]]" >&2
	exit 2
	;;
esac
