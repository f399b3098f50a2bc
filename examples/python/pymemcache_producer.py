#!/usr/bin/python3
"""Producer with pymemcache (Debian: python3-pymemcache): enqueue COUNT jobs.

usage: pymemcache_producer.py SERVERS QUEUE COUNT [BODY_BYTES]
"""
import sys

from pymemcache import serde
from pymemcache.client.hash import HashClient

servers = [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in sys.argv[1].split(","))]
queue, count = sys.argv[2], int(sys.argv[3])
body_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 0

mc = HashClient(
    servers,
    serde=serde.pickle_serde,  # python-memcached compatible flags: dict = pickle (1)
    default_noreply=False,  # the default (True) makes set() return before STORED
    timeout=6,  # seconds; above mcbridge's confirm_timeout (5s). Default: none
    connect_timeout=3,
)

for i in range(1, count + 1):
    job = {"id": i, "body": f"payload {i} " + "x" * body_bytes}
    if not mc.set(queue, job):  # False: NOT_STORED (SERVER_ERROR raises)
        sys.exit(f"set {queue} not stored")
    print("stored", i, flush=True)
