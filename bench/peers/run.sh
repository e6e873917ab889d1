#!/usr/bin/env bash
# Side-by-side: Weir against the job queues people would pick instead, on this machine, in
# one run (issue 6). Same workload for each: N jobs of a ~100-byte JSON payload, a no-op
# handler, producers and workers running at the same time, completed jobs not retained;
# then enqueue-to-start latency at a steady RATE jobs/s for SECONDS.
#
#   bash bench/peers/run.sh              # N=200000 RATE=5000 STEADY_SECONDS=10
#
# Status: Weir and BullMQ are wired; Celery and graphile-worker are still to come (issue 6
# is open). Peers install into bench/peers/.work/ (git-ignored). Not run in CI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$here/.work"
N=${N:-200000}
RATE=${RATE:-5000}
STEADY_SECONDS=${STEADY_SECONDS:-10}   # (not $SECONDS: bash keeps its own)
REDIS_PORT=${REDIS_PORT:-16379}   # a Redis of the benchmark's own, so its RSS is BullMQ's alone
WEIR_PORT=${WEIR_PORT:-7441}
mkdir -p "$work"
results="$work/results.jsonl"
: >"$results"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Peak resident memory of a process, KiB (VmHWM).
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

echo "== installing peers (npm) into $work"
mkdir -p "$work/bullmq"
cp "$here/bullmq.mjs" "$work/bullmq/"
if [ ! -d "$work/bullmq/node_modules/bullmq" ]; then
  (cd "$work/bullmq" && npm init -y >/dev/null && npm install bullmq@5 --no-audit --no-fund --silent)
fi

echo "== weir (embedded, durability fsync)"
(cd "$root" && cargo build --release -p weir --locked -q)
tmp=$(mktemp -d)
WEIR_CACHE_DIR="$tmp/cache" "$root/target/release/weir" serve --listen 127.0.0.1:$WEIR_PORT \
  --data-dir "$tmp/data" >"$tmp/serve.log" 2>&1 &
weir_pid=$!
pids+=("$weir_pid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$WEIR_PORT/ready" >/dev/null && break; sleep 0.1; done
"$root/target/release/weir" --server "http://127.0.0.1:$WEIR_PORT" --json bench --jobs "$N" \
  --payload-bytes 100 --rate "$RATE" --seconds "$STEADY_SECONDS" >"$tmp/weir.json"
python3 - "$tmp/weir.json" "$(peak_rss_kib $weir_pid)" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"system": "Weir (fsync)", "enqueue": r["enqueue_jobs_per_s"],
  "e2e": r["end_to_end_jobs_per_s"], "p50": r["latency"]["p50_ms"], "p99": r["latency"]["p99_ms"],
  "rss_mib": int(sys.argv[2]) / 1024,
  "durability": "fsync before every acknowledgement (group commit)"}))
PY
kill "$weir_pid"; wait "$weir_pid" 2>/dev/null || true

echo "== bullmq $(node -e "console.log(require('$work/bullmq/node_modules/bullmq/package.json').version)") on redis-server :$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
sleep 0.3
redis_pid=$(redis-cli -p "$REDIS_PORT" info server | awk -F: '/process_id/ {print $2}' | tr -d '\r')
run_bullmq() { # $1: RATE (0 = as fast as possible)
  (cd "$work/bullmq" && REDIS_PORT=$REDIS_PORT N=$N RATE=$1 DURATION=$STEADY_SECONDS node bullmq.mjs work >"$tmp/bw.json") &
  local w=$!
  sleep 1
  (cd "$work/bullmq" && REDIS_PORT=$REDIS_PORT N=$N RATE=$1 DURATION=$STEADY_SECONDS node bullmq.mjs produce >"$tmp/bp.json")
  wait "$w"
}
run_bullmq 0
cp "$tmp/bp.json" "$tmp/bp0.json"; cp "$tmp/bw.json" "$tmp/bw0.json"
run_bullmq "$RATE"
python3 - "$tmp" "$N" "$(peak_rss_kib "$redis_pid")" >>"$results" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
p, w = json.load(open(f"{d}/bp0.json")), json.load(open(f"{d}/bw0.json"))
lat = json.load(open(f"{d}/bw.json"))
print(json.dumps({"system": "BullMQ", "enqueue": n / ((p["enqueued_at"] - p["start"]) / 1000),
  "e2e": n / ((w["last"] - p["start"]) / 1000), "p50": lat["p50_ms"], "p99": lat["p99_ms"],
  "rss_mib": int(sys.argv[3]) / 1024,
  "durability": "Redis without fsync (appendonly no): an acknowledged job can be lost"}))
PY
rm -rf "$tmp"

echo
python3 - "$results" "$N" "$RATE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
weir = rows[0]
print(f"N={sys.argv[2]}, latency at a steady {sys.argv[3]} jobs/s\n")
print("| system | enqueue jobs/s | end-to-end jobs/s | Weir's ratio (e2e) | p50 ms | p99 ms | peak RSS (server side) | durability |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    ratio = "—" if r is weir else f"{weir['e2e'] / r['e2e']:.1f}×"
    print(f"| {r['system']} | {r['enqueue']:,.0f} | {r['e2e']:,.0f} | {ratio} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rss_mib']:.0f} MiB | {r['durability']} |")
PY
