"""python-memcached logging in with the text login (memcached -Y): a set
whose value is "user password". usage: HOST PORT QUEUE USER PASSWORD"""
import sys

import memcache

host, port, q, user, password = sys.argv[1:6]
# A login waits for the broker to check the password: give it more than
# the default 3 s socket_timeout on a loaded machine.
mc = memcache.Client([f"{host}:{port}"], socket_timeout=30)
print(f"wrong_login={mc.set('auth', user + ' wrong')}")
print(f"login={mc.set('auth', user + ' ' + password)}")
print(f"set={mc.set(q, 'hello')}")
print(f"get={mc.get(q)!r}")
print(f"delete={mc.delete(q)}")
