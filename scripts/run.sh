#!/usr/bin/env bash
# make run [ARGS="-log-level debug"]: run mcbridge against the local RabbitMQ.
#
# mcbridge with no -config uses the broker on 127.0.0.1:5672 (guest/guest).
# When nothing answers there, this script starts the local RabbitMQ, or first
# installs it (Debian/Ubuntu, as root: apt-get install rabbitmq-server), or
# says exactly what to do where it cannot. Then it builds mcbridge and runs
# it in its place (exec), so that SIGTERM and ^C reach mcbridge itself and
# stop it gracefully.
#
# MCBRIDGE_BROKER_ADDR (default 127.0.0.1:5672) is where it looks for the
# broker; scripts/run_test.go sets it to keep off the machine's broker.
set -euo pipefail
cd "$(dirname "$0")/.."

broker=${MCBRIDGE_BROKER_ADDR:-127.0.0.1:5672}
broker_host=${broker%:*}
broker_port=${broker##*:}

say() { printf 'make run: %s\n' "$*" >&2; }
fail() {
	say "$@"
	exit 1
}

# answers: something accepts TCP connections at the broker address.
answers() { (exec 3<>"/dev/tcp/$broker_host/$broker_port") 2>/dev/null; }

is_root() { [ "$(id -u)" = 0 ]; }

installed() { command -v rabbitmq-server >/dev/null 2>&1 && command -v rabbitmqctl >/dev/null 2>&1; }

install_rabbitmq() {
	if ! command -v apt-get >/dev/null 2>&1; then
		fail "nothing answers on $broker and RabbitMQ is not installed. This is not a Debian or Ubuntu
machine, so install RabbitMQ (3.10 or later, with Erlang) from your system's packages or from
https://www.rabbitmq.com/docs/download, start it, and run make run again. Or point mcbridge at a
broker you have: make run ARGS='-config FILE' with amqp.urls in FILE."
	fi
	if ! is_root; then
		fail "nothing answers on $broker and RabbitMQ is not installed. Install it as root:
    sudo apt-get install rabbitmq-server
(Debian starts it), or run this command as root: sudo make run"
	fi
	say "nothing answers on $broker: installing RabbitMQ (apt-get install rabbitmq-server)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q rabbitmq-server
}

start_rabbitmq() {
	if ! is_root; then
		fail "RabbitMQ is installed but nothing answers on $broker; starting it needs root:
    sudo systemctl start rabbitmq-server     (or, without systemd: sudo rabbitmq-server -detached)
then run make run again, or run this command as root: sudo make run"
	fi
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		say "starting RabbitMQ (systemctl start rabbitmq-server)"
		systemctl start rabbitmq-server
	else
		say "starting RabbitMQ (rabbitmq-server -detached)"
		rabbitmq-server -detached
	fi
}

# await_broker waits up to two minutes for the broker to boot and answer.
await_broker() {
	local end=$((SECONDS + 120))
	while [ "$SECONDS" -lt "$end" ]; do
		# await_startup fails at once while the node has not registered
		# with epmd yet: it is retried.
		rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1 || true
		answers && return 0
		sleep 1
	done
	fail "RabbitMQ was started but nothing answers on $broker after 2 minutes: check its
listeners (listeners.tcp in /etc/rabbitmq/rabbitmq.conf) and its log (/var/log/rabbitmq/), or run
make run ARGS='-config FILE' with the broker's URL in amqp.urls."
}

command -v go >/dev/null 2>&1 ||
	fail "the go command is not installed: install Go $(sed -n 's/^go //p' go.mod) or later (https://go.dev/dl/)."

if answers; then
	say "RabbitMQ answers on $broker"
else
	installed || install_rabbitmq
	# Debian's package starts the broker when it installs it.
	answers || start_rabbitmq
	await_broker
	say "RabbitMQ answers on $broker"
fi

bin=${XDG_CACHE_HOME:-$HOME/.cache}/mcbridge/mcbridge
mkdir -p "$(dirname "$bin")"
go build -o "$bin" ./cmd/mcbridge
say "$bin $*"
exec "$bin" "$@"
