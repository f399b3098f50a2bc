"""python-memcached behaviours that matter on a queue. usage: HOST PORT QUEUE"""
import sys
import time

import memcache

host, port, q = sys.argv[1:4]
mc = memcache.Client([f"{host}:{port}"])
print(f"delete_miss={mc.delete(q)}")  # NOT_FOUND counts as success
print(f"socket_timeout={mc.servers[0].socket_timeout} dead_retry={mc.servers[0].dead_retry}")
t = time.monotonic()
v = mc.get(q + "/t=300")
print(f"wait_under_timeout={v} ms={int((time.monotonic() - t) * 1000)}")
mc = memcache.Client([f"{host}:{port}"], socket_timeout=0.3)
v = mc.get(q + "/t=1500")
print(f"wait_over_timeout={v}")  # a timeout looks like a miss...
print(f"next_command={mc.set(q, 'next')}")  # ...and the server is dead for dead_retry seconds
