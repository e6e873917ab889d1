#!/usr/bin/env python3
"""How long `periodic watch` takes to reflect one file's edit, on a big corpus.

Starts `periodic watch CORPUS --json`, waits until it watches, then edits N files one at a
time (appends a small function, waits for watch's answer for that file, then restores the
file and waits again) and reports the "ms" watch gives for each: from the file event it
received to its answer (patterns touched, files sharing code, dependents).

    python3 bench/periodic_watch.py --bin target/release/periodic --corpus DIR [--edits 40]
"""

import argparse
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--edits", type=int, default=40)
    args = ap.parse_args()
    files = []
    for root, _, names in os.walk(args.corpus):
        files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
    files.sort()
    random.seed(7)
    chosen = random.sample(files, args.edits)
    index = os.path.join(tempfile.mkdtemp(), "index")
    t0 = time.time()
    p = subprocess.Popen(
        [args.bin, "watch", args.corpus, "--index", index, "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in p.stdout], daemon=True).start()

    def until(ok, secs=120):
        deadline = time.time() + secs
        while True:
            v = json.loads(lines.get(timeout=max(0.1, deadline - time.time())))
            if ok(v):
                return v

    until(lambda v: "watching" in v, 600)
    print(f"watching after {time.time() - t0:.1f} s (index built, loaded in memory)")
    ms = []
    for path in chosen:
        rel = os.path.relpath(path, args.corpus)
        with open(path, "rb") as f:
            original = f.read()
        with open(path, "ab") as f:
            f.write(b"\nfn periodic_watch_bench(a: u32) -> u32 {\n    if a > 3 { a * 7 } else { a + 1 }\n}\n")
        v = until(lambda v: v.get("file") == rel)
        ms.append(v["ms"])
        with open(path, "wb") as f:
            f.write(original)
        ms.append(until(lambda v: v.get("file") == rel)["ms"])
    p.kill()
    ms.sort()
    n = len(ms)
    print(f"{n} edits: p50 {ms[n // 2]:.1f} ms, p99 {ms[min(n - 1, int(n * 0.99))]:.1f} ms, max {ms[-1]:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
