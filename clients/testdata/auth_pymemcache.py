"""pymemcache logging in with the text login (memcached -Y): a set whose
value is "user password", with noreply=False (its default noreply would
leave the reply unread). usage: HOST PORT QUEUE USER PASSWORD"""
import sys

from pymemcache.client.base import Client

host, port, q, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
c = Client((host, port))
try:
    c.set("auth", f"{user} wrong", noreply=False)
    print("wrong_login=True")
except Exception as e:
    print(f"wrong_login={type(e).__name__} {e}")
print(f"login={c.set('auth', f'{user} {password}', noreply=False)}")
print(f"set={c.set(q, b'hello', noreply=False)}")
print(f"get={c.get(q)!r}")
print(f"delete={c.delete(q, noreply=False)}")
