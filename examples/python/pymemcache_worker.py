#!/usr/bin/python3
"""Worker with pymemcache (Debian: python3-pymemcache).

get reserves a job, delete acks it once it is done. A worker that dies before
delete loses nothing: mcbridge puts the job back when the connection closes.

usage: pymemcache_worker.py SERVERS QUEUE[,QUEUE...] [MAX] [IDLE_SECONDS] [crash]
"""
import json
import os
import sys
import time

from pymemcache import serde
from pymemcache.client.hash import HashClient

servers = [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in sys.argv[1].split(","))]
queues = sys.argv[2].split(",")
max_jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # 0: no limit
idle = float(sys.argv[4]) if len(sys.argv) > 4 else 5  # stop after this long without a job
crash = sys.argv[5:6] == ["crash"]  # demo: die while holding a job

mc = HashClient(servers, serde=serde.pickle_serde, default_noreply=False, timeout=6, connect_timeout=3)

done, last_job = 0, time.monotonic()
while not max_jobs or done < max_jobs:
    jobs = mc.get_many(queues)  # one job per queue: {queue: job}
    if not jobs:
        if time.monotonic() - last_job > idle:
            break
        time.sleep(0.1)
        continue
    for queue, job in jobs.items():
        if crash:
            print("crashed holding", json.dumps(job), flush=True)
            os._exit(3)
        print("consumed", json.dumps(job), flush=True)  # process the job here
        if not mc.delete(queue):  # needs noreply=False to see NOT_FOUND
            print(f"delete {queue}: not found (lease ran out?)", file=sys.stderr)
        done += 1
        last_job = time.monotonic()
