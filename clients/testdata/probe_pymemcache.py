"""pymemcache behaviours that matter on a queue. usage: HOST PORT QUEUE"""
import sys
import time

from pymemcache.client.base import Client

host, port, q = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = Client((host, port))
print(f"default_noreply={c.default_noreply} timeout={c.timeout}")
print(f"delete_miss={c.delete(q)} delete_miss_noreply_false={c.delete(q, noreply=False)}")
# A set the gateway refuses (CLIENT_ERROR: reserved queue name): the default
# noreply set never hears about it.
print(f"refused_set_default={c.set('amq.refused', b'x')}")
try:
    c.set("amq.refused", b"x", noreply=False)
    print("refused_set_noreply_false=True")
except Exception as e:
    print(f"refused_set_noreply_false={type(e).__name__}")
t = time.monotonic()
v = c.get(q + "/t=300")
print(f"wait_under_timeout={v} ms={int((time.monotonic() - t) * 1000)}")
c = Client((host, port), timeout=0.3)
try:
    print(f"wait_over_timeout={c.get(q + '/t=1500')}")
except Exception as e:
    print(f"wait_over_timeout={type(e).__name__}")
print(f"next_command={c.set(q, b'next', noreply=False)}")
