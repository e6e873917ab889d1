#!/usr/bin/env python3
"""What an operator's reads cost with many jobs held: `GET /v1/queues/{q}`, `GET /v1/queues`,
`/metrics` and pages of `GET /v1/jobs`, timed over HTTP against a real `weir serve`.

    python3 bench/read_paths.py [--bin target/release/weir] [--jobs 1000000] [--reads 200]

It starts the server on a fresh data directory (port 17431), enqueues `--jobs` waiting jobs
in batches of 10,000, fetches and acks 1,000 of them (so the completed page has something to
walk past), then times each read `--reads` times on one kept-alive connection and prints a
Markdown table of p50 / p99 / max in milliseconds. Run it with `--bin` pointing at two builds
to compare them; nothing else should run on the machine meanwhile.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PORT = 17431


def request(conn, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: {resp.status} {data[:200]!r}")
    return data


def wait_ready(deadline_s=60):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            request(c, "GET", "/ready")
            return
        except (OSError, RuntimeError):
            time.sleep(0.05)
    sys.exit("the server did not become ready")


def load(conn, n):
    batch = 10_000
    done = 0
    t = time.time()
    while done < n:
        k = min(batch, n - done)
        jobs = [{"queue": "big", "kind": "k", "payload": {"n": done + i}} for i in range(k)]
        request(conn, "POST", "/v1/jobs", json.dumps({"jobs": jobs}))
        done += k
        if done % 200_000 == 0 or done == n:
            print(f"  enqueued {done}/{n} ({done / (time.time() - t):,.0f}/s)", file=sys.stderr)
    got = json.loads(request(conn, "POST", "/v1/fetch",
                             json.dumps({"queues": ["big"], "max": 1000, "wait_ms": 0})))
    acks = [{"id": j["id"], "lease_id": j["lease_id"]} for j in got["jobs"]]
    request(conn, "POST", "/v1/ack", json.dumps({"acks": acks}))


def timed(conn, path, reads):
    request(conn, "GET", path)  # warm
    ms = []
    for _ in range(reads):
        t = time.perf_counter()
        request(conn, "GET", path)
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    return ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/weir")
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--reads", type=int, default=200)
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="weir-reads-")
    env = dict(os.environ, RUST_LOG="warn", WEIR_CACHE_DIR=os.path.join(data, "cache"))
    server = subprocess.Popen(
        [a.bin, "serve", "--listen", f"127.0.0.1:{PORT}", "--data-dir", os.path.join(data, "d")],
        env=env, stdout=subprocess.DEVNULL)
    try:
        wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
        print(f"loading {a.jobs} waiting jobs into {a.bin} ...", file=sys.stderr)
        load(conn, a.jobs)
        mid = a.jobs // 2
        reads = [
            ("GET /v1/queues/big", "/v1/queues/big"),
            ("GET /v1/queues", "/v1/queues"),
            ("GET /metrics", "/metrics"),
            ("GET /v1/jobs?queue=big&state=waiting&limit=100", "/v1/jobs?queue=big&state=waiting&limit=100"),
            (f"same, cursor at job {mid}", f"/v1/jobs?queue=big&state=waiting&limit=100&cursor={mid}"),
            ("GET /v1/jobs?state=completed&limit=100", "/v1/jobs?state=completed&limit=100"),
            ("GET /v1/jobs?limit=100", "/v1/jobs?limit=100"),
        ]
        print(f"| read ({a.jobs:,} waiting jobs) | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|")
        for name, path in reads:
            p50, p99, mx = timed(conn, path, a.reads)
            print(f"| `{name}` | {p50:.3f} | {p99:.3f} | {mx:.3f} |")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
