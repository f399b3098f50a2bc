#!/usr/bin/python3
"""Producer with python-memcached (Debian: python3-memcache): enqueue COUNT jobs.

usage: producer.py SERVERS QUEUE COUNT [BODY_BYTES]   (SERVERS: host:port[,host:port...])
"""
import sys

import memcache

servers, queue, count = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
body_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 0

# socket_timeout (default 3 s) must exceed mcbridge's confirm_timeout (5s):
# set() waits for RabbitMQ's publisher confirm.
mc = memcache.Client(servers, socket_timeout=6)

for i in range(1, count + 1):
    # A dict is pickled (flags 1); add min_compress_len=... to zlib-compress (flags |= 8).
    job = {"id": i, "body": f"payload {i} " + "x" * body_bytes}
    if not mc.set(queue, job):  # 0: NOT_STORED, SERVER_ERROR or no server
        sys.exit(f"set {queue} failed")
    print("stored", i, flush=True)
