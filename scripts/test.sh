#!/usr/bin/env bash
# make test: every check CI runs, after installing what they need.
#
# On a fresh Debian/Ubuntu machine, as root, it installs what is missing:
# gcc (go test -race needs cgo), rabbitmq-server (the tests start private nodes of their own from it; the
# package's own broker service is stopped if installing started it),
# promtool (Debian's prometheus package, whose services are stopped), and
# the memcache clients the clients/ tests run. Elsewhere it says what to
# install. Then: go build, go vet, gofmt, go test -race -count=1 ./...
# and short fuzz passes.
#
# The tests never use a broker they did not start. Where nothing listens
# on 127.0.0.1:5672 (the machine's broker's address), a tripwire listens
# there while they run and fails the run if anything connects. Afterwards
# no process of a private test node may be left.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s (%ds)\n' "$*" "$SECONDS"; }
fail() {
	printf 'make test: %s\n' "$*" >&2
	exit 1
}

# The memcache client libraries and tools that clients/ runs examples/ with
# (ruby-dalli does not depend on ruby in Debian: ruby is listed on its own;
# libsasl2-modules holds SASL PLAIN for php-memcached and the libmemcached
# tools, only recommended by libsasl2-2, which --no-install-recommends skips),
# and nc and curl, which the docs' transcripts use (docs/).
client_pkgs="php-cli php-memcached php-memcache python3 python3-memcache python3-pymemcache ruby ruby-dalli libmemcached-tools libsasl2-modules netcat-openbsd curl"

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q ' installed$'; }

apt_updated=
# apt_install PKG...: install Debian packages, as root.
apt_install() {
	if ! command -v apt-get >/dev/null 2>&1; then
		fail "missing: $*. This is not a Debian or Ubuntu machine: install them (or your system's equivalents) and run make test again."
	fi
	if [ "$(id -u)" != 0 ]; then
		fail "missing Debian packages: $*. Install them as root (sudo apt-get install --no-install-recommends $*) or run: sudo make test"
	fi
	export DEBIAN_FRONTEND=noninteractive
	if [ -z "$apt_updated" ]; then
		apt-get update -q
		apt_updated=1
	fi
	apt-get install -y -q --no-install-recommends "$@"
}

# answers HOST PORT: something accepts TCP connections there.
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

log "toolchain"
command -v go >/dev/null 2>&1 ||
	fail "the go command is not installed: install Go $(sed -n 's/^go //p' go.mod) or later (https://go.dev/dl/)."
go version

log "C compiler (go test -race needs cgo)"
# A minimal Debian has no C compiler, and without one Go turns cgo off and
# -race refuses to run.
if ! command -v gcc >/dev/null 2>&1; then
	apt_install gcc libc6-dev
fi
[ "$(go env CGO_ENABLED)" = 1 ] ||
	fail "cgo is off (CGO_ENABLED=$(go env CGO_ENABLED)) and go test -race needs it: unset CGO_ENABLED or set it to 1, with gcc installed."
gcc --version | sed -n 1p

log "RabbitMQ (the tests start private nodes from it)"
if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1; then
	:
else
	broker_was_up=
	answers 127.0.0.1 5672 && broker_was_up=1
	apt_install rabbitmq-server
	# Debian starts the package's broker on 127.0.0.1:5672. The tests do
	# not use it; stopped, it costs no CPU while they run and leaves the
	# address to the tripwire. make run starts it when it is wanted.
	if [ -z "$broker_was_up" ] && answers 127.0.0.1 5672; then
		service rabbitmq-server stop >/dev/null 2>&1 || rabbitmqctl -q stop >/dev/null 2>&1 || true
	fi
fi
for f in rabbitmq-server rabbitmqctl rabbitmq-diagnostics; do
	[ -x "/usr/lib/rabbitmq/bin/$f" ] || command -v "$f" >/dev/null 2>&1 || fail "$f not found after installing rabbitmq-server"
done
dpkg-query -W rabbitmq-server 2>/dev/null || true

log "promtool (checks the alert rules, the Prometheus config and the dashboards' PromQL)"
if ! command -v promtool >/dev/null 2>&1; then
	apt_install prometheus
	# Only promtool is needed: the package's services (Prometheus on 9090,
	# node-exporter on 9100) must not run and use CPU during the tests.
	service prometheus stop >/dev/null 2>&1 || true
	service prometheus-node-exporter stop >/dev/null 2>&1 || true
fi
promtool --version 2>&1 | sed -n 1p

log "memcache client libraries (the clients/ tests run the examples/ with them)"
missing=""
for p in $client_pkgs; do
	pkg_installed "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	# shellcheck disable=SC2086 # one word per package
	apt_install $missing
fi
# shellcheck disable=SC2086
dpkg-query -W $client_pkgs

log "build and vet"
go build ./...
go vet ./...
unformatted=$(gofmt -l .)
[ -z "$unformatted" ] || fail "gofmt needed on: $unformatted"

log "tests: go test -race -count=1 ./..."
work=$(mktemp -d)
tripwire_pid=
cleanup() {
	[ -z "$tripwire_pid" ] || kill "$tripwire_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
if answers 127.0.0.1 5672; then
	echo "something listens on 127.0.0.1:5672 (the machine's broker?): no tripwire there; the tests"
	echo "still refuse to dial it (testbroker.MustBePrivate, TestNoTestNamesTheMachinesBroker)"
else
	go build -o "$work/tripwire" ./scripts/tripwire
	"$work/tripwire" -listen 127.0.0.1:5672 >"$work/tripwire.log" 2>&1 &
	tripwire_pid=$!
	for _ in $(seq 50); do
		grep -q listening "$work/tripwire.log" 2>/dev/null && break
		kill -0 "$tripwire_pid" 2>/dev/null || break
		sleep 0.1
	done
	grep -q listening "$work/tripwire.log" || fail "tripwire did not start: $(cat "$work/tripwire.log")"
	echo "tripwire on 127.0.0.1:5672: no test may connect there"
fi
test_start=$SECONDS
# Whatever the tests say, the tripwire and the leftover check below report
# too: a failed run must still show whether it kept to its own nodes.
test_status=0
# -timeout: the default 10 minutes per package is too tight for the
# packages that start many rabbitmqctl VMs (bridge/authtest, cluster) on a
# busy 2-core machine.
go test -race -count=1 -timeout 30m ./... || test_status=$?
echo "go test took $((SECONDS - test_start))s"
tripped=
if [ -n "$tripwire_pid" ]; then
	kill -TERM "$tripwire_pid"
	status=0
	wait "$tripwire_pid" || status=$?
	tripwire_pid=
	cat "$work/tripwire.log"
	[ "$status" = 0 ] || tripped=1
fi

log "no private test node left"
# Processes of private nodes (internal/rabbitnode) whose test process is
# gone. Their watchdogs end them within seconds of the test process: wait
# that long before calling them leftovers.
leftovers() {
	local f pid dir owner
	for f in $(grep -lzs '^MCBRIDGE_RABBITNODE_HOST=' /proc/[0-9]*/environ 2>/dev/null); do
		pid=${f#/proc/}
		pid=${pid%/environ}
		dir=$(tr '\0' '\n' <"$f" 2>/dev/null | sed -n 's/^MCBRIDGE_RABBITNODE_HOST=//p')
		owner=
		[ -n "$dir" ] && read -r owner _ <"$dir/owner" 2>/dev/null || true
		if [ -z "$owner" ] || ! kill -0 "$owner" 2>/dev/null; then
			echo "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) of $dir"
		fi
	done
}
left=$(leftovers)
for _ in $(seq 60); do
	[ -z "$left" ] && break
	sleep 0.5
	left=$(leftovers)
done
[ -z "$tripped" ] || fail "a test connected to 127.0.0.1:5672, the machine's broker's address (see above)"
[ -z "$left" ] || fail "processes of private test nodes outlived their tests:
$left"
echo "none"
[ "$test_status" = 0 ] || fail "go test failed (see above)"

log "fuzz (short, seeded from testdata)"
# fuzz PKG TARGET DURATION: one short fuzz pass. Go 1.26's fuzzing
# coordinator can end a run bounded by time with a bare "context deadline
# exceeded" when the machine is busy, although it found nothing
# (golang/go#75804, fixed in Go 1.27). Such a run (no failing input
# written) is run once more; any other failure fails at once.
fuzz() {
	local pkg=$1 target=$2 duration=$3 attempt status
	for attempt in 1 2; do
		status=0
		go test -run='^$' -fuzz="^$target\$" -fuzztime="$duration" "$pkg" 2>&1 | tee "$work/fuzz.log" || status=$?
		[ "$status" = 0 ] && return 0
		if grep -q 'Failing input written to' "$work/fuzz.log" || ! grep -q 'context deadline exceeded' "$work/fuzz.log"; then
			fail "$target failed (above)"
		fi
		echo "$target: the fuzzing engine's deadline race (golang/go#75804) with nothing found; once more"
	done
	fail "$target: the fuzzing engine's deadline race twice in a row"
}
fuzz ./mcproto/ FuzzParse 20s
fuzz ./mcproto/ FuzzSplitKey 10s
fuzz ./mcproto/ FuzzBinary 10s
fuzz ./mcproto/ FuzzMeta 10s
fuzz ./config/ FuzzLoad 10s

log "make test: all passed"
