"""Celery side of bench/peers/run.sh, with the Redis broker.

Roles:
  python celery_bench.py produce       N jobs, one message each; or RATE/s for DURATION s
                                       (Celery cannot hold 5,000/s here, so the steady run
                                       stops after DURATION s and says how many it sent)
  celery -A celery_bench worker ...    the no-op task (run.sh passes the worker flags);
                                       STATE_DIR/ready appears once it consumes
  python celery_bench.py wait          until the workers ran EXPECT jobs; prints the last
                                       completion time and the enqueue-to-start latencies

Celery has no bulk enqueue: each job is its own message. The producer keeps one pooled
producer for the whole run (the documented way to send many messages) instead of acquiring
one per `.delay`. Results are not stored (`task_ignore_result`), so completed jobs leave
nothing behind. Each worker child keeps its own count, last completion time and latencies
and writes them to STATE_DIR every 200 ms; `wait` sums those files.
"""

import glob
import json
import os
import sys
import tempfile
import threading
import time

from celery import Celery
from celery.signals import worker_ready

REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
N = int(os.environ.get("N", "200000"))
RATE = int(os.environ.get("RATE", "0"))
DURATION = int(os.environ.get("DURATION", "10"))
STATE_DIR = os.environ.get("STATE_DIR", tempfile.gettempdir())
PAD = "x" * 80  # {"t": 1795398996.150839, "p": "xx…"} is about 100 bytes

app = Celery("celery_bench", broker=f"redis://127.0.0.1:{REDIS_PORT}/0")
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=int(os.environ.get("PREFETCH", "4")),
    worker_disable_rate_limits=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)

@worker_ready.connect
def _ready(**_):
    open(os.path.join(STATE_DIR, "ready"), "w").close()


_state = {"done": 0, "last": 0.0, "lat": []}
_flusher = None


def _flush_forever():
    path = os.path.join(STATE_DIR, f"celery-child-{os.getpid()}.json")
    while True:
        time.sleep(0.2)
        fd, tmp = tempfile.mkstemp(dir=STATE_DIR)
        with os.fdopen(fd, "w") as f:
            json.dump(_state, f)
        os.replace(tmp, path)


@app.task(name="bench")
def bench(job):
    global _flusher
    started = time.time()
    if _flusher is None:  # the first job in this child process
        _flusher = threading.Thread(target=_flush_forever, daemon=True)
        _flusher.start()
    if RATE > 0:
        _state["lat"].append((started - job["t"]) * 1000.0)
    _state["done"] += 1
    _state["last"] = time.time()


def produce():
    t0 = time.time()
    with app.producer_pool.acquire(block=True) as producer:
        if RATE > 0:
            total, sent = RATE * DURATION, 0
            while sent < total and time.time() - t0 < DURATION:
                due = min(total, int((time.time() - t0) * RATE))
                while sent < due and time.time() - t0 < DURATION:
                    bench.apply_async(({"t": time.time(), "p": PAD},), producer=producer)
                    sent += 1
                time.sleep(0.01)
        else:
            for _ in range(N):
                bench.apply_async(({"t": time.time(), "p": PAD},), producer=producer)
            sent = N
    end = time.time()
    print(json.dumps({"start": t0 * 1000.0, "enqueued_at": end * 1000.0, "sent": sent}))


def wait():
    expect = int(os.environ["EXPECT"])
    while True:
        states = []
        for path in glob.glob(os.path.join(STATE_DIR, "celery-child-*.json")):
            with open(path) as f:
                states.append(json.load(f))
        if sum(s["done"] for s in states) >= expect:
            break
        time.sleep(0.1)
    lat = sorted(x for s in states for x in s["lat"])

    def pct(p):
        return lat[min(len(lat) - 1, int(len(lat) * p))] if lat else None

    last = max(s["last"] for s in states) * 1000.0
    done = sum(s["done"] for s in states)
    print(json.dumps({"done": done, "last": last, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}))


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "produce":
        produce()
    elif role == "wait":
        wait()
    else:
        sys.exit("usage: python celery_bench.py produce|wait")
