#!/bin/sh
# The libmemcached tools logging in with SASL (binary protocol).
# usage: HOST PORT QUEUE USER PASSWORD
host=$1 port=$2 q=$3 user=$4 pass=$5
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf 'hello' > "$dir/$q"
memccp --binary --servers="$host:$port" --username="$user" --password=wrong "$dir/$q" >/dev/null 2>&1
echo "wrong_password_exit=$?"
memccp --binary --servers="$host:$port" --username="$user" --password="$pass" "$dir/$q"
echo "set_exit=$?"
# memccat exits with its connection, which gives the reservation back.
echo "get=$(memccat --binary --servers="$host:$port" --username="$user" --password="$pass" "$q")"
