"""Peak memory of a group of processes that share memory (PostgreSQL's backends share its
buffers, so adding their RSS would count the same pages many times): samples the sum of the
proportional set size (Pss) of every process whose name is argv[1], 10 times a second, until
SIGTERM, then prints the largest sum in KiB."""

import os
import signal
import sys
import time

name = sys.argv[1]
peak = 0
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
while running:
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:  # the process ended meanwhile
            continue
    peak = max(peak, total)
    time.sleep(0.1)
print(peak)
