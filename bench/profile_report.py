"""Sorts the samples of `perf script` into the kinds of work a Weir server does.

    perf script -F comm,ip,sym | python3 bench/profile_report.py [--json]

Each sample is charged to one kind: the stack is read from the leaf upwards and the first
frame that names a kind decides (memcpy and friends are charged to their caller), so the
shares add up to 100 %. Written for `bench/profile.sh`, which records the server with frame
pointers so that the stacks reach from the kernel to our code.
"""

import json
import re
import sys
from collections import Counter

# (kind, pattern), in the order a frame is tested; the first match names the frame's kind.
KINDS = [
    ("disk: fdatasync (the commit thread waiting on the disk)", r"fdatasync|\bfsync\b|sys_fdatasync"),
    ("kernel: zeroing fresh memory (page faults)", r"exc_page_fault|clear_page"),
    ("kernel: TCP on loopback (send, receive)",
     r"tcp_|sock_|inet_|__sys_recvfrom|__sys_sendto|ksys_write|ksys_read|do_writev|do_iter_write|skb|net_rx|__netif|loopback"),
    ("kernel: sleeping and waking (futex, epoll, scheduler)",
     r"futex|epoll|schedule|finish_task_switch|sched_yield|try_to_wake_up|nanosleep|__switch_to|pick_next"),
    ("kernel: file writes (journal, tables)", r"ext4_|vfs_write|generic_perform_write|filemap|iowrite|block_|blk_|virtqueue|folio"),
    ("allocator (mimalloc)", r"^_?mi_|mi_malloc|mi_free|__rust_alloc|__rust_dealloc|__rust_realloc|alloc::raw_vec|alloc::alloc"),
    ("JSON: parsing and writing (serde_json)", r"serde_json|serde::|serde_core::|itoa::|ryu::"),
    ("HTTP: hyper, axum routing, middleware", r"hyper::|http::|httparse|axum::|axum_core|tower|matchit|h2::|http_body"),
    ("engine (weir-core: ordering, leases, flow control)", r"weir_core::|indexmap::|interval_heap|BTreeMap|btree::"),
    ("fjall: memtable, journal, flush, compaction", r"fjall::|lsm_tree::|crossbeam_skiplist|crossbeam_epoch|byteview|value_log|xxhash|lz4"),
    ("store: record encoding, commit loop (weir-store)", r"weir_store::|postcard"),
    ("server glue: auth, handlers, metrics, logs", r"weir_server::|weir_api::|prometheus::|tracing|weir::"),
    ("tokio runtime (tasks, timers, I/O driver)", r"tokio::|mio::|parking_lot"),
]
PASS = re.compile(r"memmove|memcpy|memset|memcmp|bcmp|strlen|\[unknown\]|^_start$|^main$|clone3?$|start_thread")
COMPILED = [(k, re.compile(p)) for k, p in KINDS]


def classify(frames):
    for f in frames:
        if PASS.search(f):
            continue
        for kind, rx in COMPILED:
            if rx.search(f):
                return kind
        if f.startswith("__x64_sys") or f.startswith("do_syscall") or f.startswith("entry_SYSCALL"):
            return "kernel: other system calls"
    return "other"


def samples(lines):
    """(thread name, [frames from the leaf]) per sample of `perf script -F comm,ip,sym`."""
    comm, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif line[0] not in " \t" or comm is None:
            comm, frames = line.strip(), []
        else:
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "[unknown]")
    if comm is not None:
        yield comm, frames


def thread_group(comm):
    # fjall names its workers "fjall:..."; tokio's are "tokio-rt-worker".
    return comm.split(":")[0] if comm.startswith("fjall") else comm


def main(argv):
    kinds, threads, total = Counter(), Counter(), 0
    for comm, frames in samples(sys.stdin):
        kinds[classify(frames)] += 1
        threads[thread_group(comm)] += 1
        total += 1
    if total == 0:
        sys.exit("profile_report.py: no samples on stdin (did perf record the server?)")
    report = {
        "samples": total,
        "threads": {t: n / total for t, n in threads.most_common()},
        "kinds": {k: n / total for k, n in kinds.most_common()},
    }
    if "--json" in argv:
        print(json.dumps(report, indent=2))
        return
    print(f"{total} samples of the server's on-CPU time\n")
    print("| thread | share |\n|---|---:|")
    for t, s in report["threads"].items():
        print(f"| {t} | {s:.1%} |")
    print("\n| kind of work | share |\n|---|---:|")
    for k, s in report["kinds"].items():
        print(f"| {k} | {s:.1%} |")


if __name__ == "__main__":
    main(sys.argv)
