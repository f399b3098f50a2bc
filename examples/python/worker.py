#!/usr/bin/python3
"""Worker with python-memcached (Debian: python3-memcache).

get reserves a job, delete acks it once it is done. A worker that dies before
delete loses nothing: mcbridge puts the job back when the connection closes.

usage: worker.py SERVERS QUEUE[,QUEUE...] [MAX] [IDLE_SECONDS] [crash]
"""
import json
import os
import sys
import time

import memcache

servers, queues = sys.argv[1].split(","), sys.argv[2].split(",")
max_jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # 0: no limit
idle = float(sys.argv[4]) if len(sys.argv) > 4 else 5  # stop after this long without a job
crash = sys.argv[5:6] == ["crash"]  # demo: die while holding a job

mc = memcache.Client(servers, socket_timeout=6)

done, last_job = 0, time.monotonic()
while not max_jobs or done < max_jobs:
    jobs = mc.get_multi(queues)  # one job per queue: {queue: job}
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
        # Ack. python-memcached returns 1 for NOT_FOUND too (lease ran out,
        # job back in the queue): it cannot tell you that the ack failed.
        mc.delete(queue)
        done += 1
        last_job = time.monotonic()
