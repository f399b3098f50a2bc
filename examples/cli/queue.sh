#!/bin/sh
# The libmemcached command-line tools (Debian: libmemcached-tools) against mcbridge.
#
#   queue.sh produce SERVERS QUEUE COUNT   enqueue COUNT jobs with memccp
#   queue.sh consume SERVERS QUEUE [MAX]   take jobs with memccat until the queue is empty
#   queue.sh stats   SERVERS               memcstat: queue_<q>_items and friends
#
# SERVERS is host:port[,host:port...]. Every tool run is one connection, and
# mcbridge requeues a reservation when its connection closes, so memccat can
# only consume from a queue with `ack: auto` (destructive get, as memcacheq).
# Set MEMC_OPTS=--binary to use the binary protocol.
set -eu
cmd=$1 servers=$2

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
