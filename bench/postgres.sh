#!/usr/bin/env bash
# Weir on PostgreSQL with 1, 2 and 3 servers, side by side with graphile-worker on the same
# database, in one run (issue 15). Not run in CI.
#
#   bash bench/postgres.sh                 # N=200000 jobs per configuration, ~3 min
#   N=50000 SERVERS="1 3" bash bench/postgres.sh
#
# Weir with K servers: K `weir serve --store $PG_URL` processes on one fresh schema, and K
# `weir bench` load generators, one per server, each on a queue of its own (so each can
# count its own jobs), N/K jobs each, enqueue batches and fetches of BATCH. End to end is N
# over the slowest generator's time; latency is enqueue-to-start while each generator sends
# RATE/K jobs/s for STEADY_SECONDS, the worst p50 and p99 of the K. graphile-worker runs
# bench/peers/graphile.mjs (installed into bench/peers/.work/ as bench/peers/run.sh does) at
# the settings described there. Results: bench/.work/postgres.json and a table on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
N=${N:-200000}
BATCH=${BATCH:-1000}
RATE=${RATE:-2000}
STEADY_SECONDS=${STEADY_SECONDS:-10}
SERVERS=${SERVERS:-1 2 3}
PORT=${PORT:-7460}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
SCHEMA=weir_bench_pg
work="$here/.work"
peers="$here/peers/.work"
mkdir -p "$work"
out="$work/postgres.jsonl"
: >"$out"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  psql "$PG_URL" -qc "drop schema if exists $SCHEMA cascade" >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail() { echo "bench/postgres: $*" >&2; exit 2; }
for tool in psql curl cargo python3 node npm; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
psql "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1 || fail "no PostgreSQL at $PG_URL (set PG_URL)"

echo "== building weir (release)"
(cd "$root" && cargo build --release -p weir --locked -q)
weir="$root/target/release/weir"

for k in $SERVERS; do
  echo "== weir, $k server(s) on PostgreSQL"
  psql "$PG_URL" -qc "drop schema if exists $SCHEMA cascade" >/dev/null 2>&1
  "$weir" migrate --store "$PG_URL" --store-schema "$SCHEMA" >/dev/null
  run=$(mktemp -d -p "$work" pg.XXXXXX)
  pids=()
  for i in $(seq 0 $((k - 1))); do
    WEIR_CACHE_DIR="$run/cache$i" "$weir" serve --listen "127.0.0.1:$((PORT + i))" \
      --store "$PG_URL" --store-schema "$SCHEMA" --data-dir "$run/d$i" >"$run/serve$i.log" 2>&1 &
    pids+=("$!")
  done
  for i in $(seq 0 $((k - 1))); do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((PORT + i))/ready" >/dev/null && break; sleep 0.1; done
    "$weir" --server "http://127.0.0.1:$((PORT + i))" queues set "bench$i" retention.completed_max=0 >/dev/null
  done
  gens=()
  for i in $(seq 0 $((k - 1))); do
    "$weir" --server "http://127.0.0.1:$((PORT + i))" --json bench --queue "bench$i" \
      --jobs $((N / k)) --batch "$BATCH" --rate $((RATE / k)) --seconds "$STEADY_SECONDS" \
      >"$run/bench$i.json" &
    gens+=("$!")
  done
  for g in "${gens[@]}"; do wait "$g"; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  python3 - "$run" "$k" >>"$out" <<'PY'
import glob, json, sys
run, k = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f)) for f in sorted(glob.glob(f"{run}/bench*.json"))]
jobs = sum(r["jobs"] for r in rs)
slowest = max(r["jobs"] / r["end_to_end_jobs_per_s"] for r in rs)
enq = max(r["jobs"] / r["enqueue_jobs_per_s"] for r in rs)
print(json.dumps({"system": f"Weir, {k} server{'s' if k > 1 else ''}", "servers": k,
  "e2e": jobs / slowest, "enqueue": jobs / enq,
  "p50": max(r["latency"]["p50_ms"] for r in rs), "p99": max(r["latency"]["p99_ms"] for r in rs),
  "held": sum(r["latency"]["held_jobs_per_s"] for r in rs)}))
PY
  rm -rf "$run"
done

echo "== graphile-worker on the same PostgreSQL"
mkdir -p "$peers/graphile"
cp "$here/peers/graphile.mjs" "$peers/graphile/"
if [ ! -d "$peers/graphile/node_modules/graphile-worker" ]; then
  (cd "$peers/graphile" && { [ -f package.json ] || npm init -y >/dev/null; } &&
    npm install graphile-worker@0.17 --no-audit --no-fund --silent)
fi
gw() { (cd "$peers/graphile" && DATABASE_URL=$PG_URL N=$N DURATION=$STEADY_SECONDS node graphile.mjs "$@"); }
run=$(mktemp -d -p "$work" gw.XXXXXX)
gw clean
gw migrate
for rate in 0 "$RATE"; do
  RATE=$rate gw work >"$run/w$rate.json" &
  w=$!
  sleep 1 # let the worker connect and listen
  RATE=$rate gw produce >"$run/p$rate.json"
  wait "$w"
done
gw clean
python3 - "$run" "$RATE" "$(node -p "require('$peers/graphile/node_modules/graphile-worker/package.json').version")" >>"$out" <<'PY'
import json, sys
run, rate, version = sys.argv[1], sys.argv[2], sys.argv[3]
p, w = json.load(open(f"{run}/p0.json")), json.load(open(f"{run}/w0.json"))
sp, sw = json.load(open(f"{run}/p{rate}.json")), json.load(open(f"{run}/w{rate}.json"))
print(json.dumps({"system": f"graphile-worker {version}", "servers": 1,
  "e2e": p["sent"] / ((w["last"] - p["start"]) / 1000),
  "enqueue": p["sent"] / ((p["enqueued_at"] - p["start"]) / 1000),
  "p50": sw["p50_ms"], "p99": sw["p99_ms"],
  "held": sp["sent"] / ((sp["enqueued_at"] - sp["start"]) / 1000)}))
PY
rm -rf "$run"

python3 - "$out" "$N" "$BATCH" "$RATE" "$STEADY_SECONDS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n, batch, rate, secs = sys.argv[2:]
gw = next((r for r in rows if r["system"].startswith("graphile")), None)
print(f"\nN = {int(n):,} jobs, batch {batch}; latency at {int(rate):,} jobs/s for {secs} s\n")
print("| system | enqueue jobs/s | end-to-end jobs/s | ÷ graphile-worker | p50 / p99 enqueue-to-start | rate held |")
print("|---|---:|---:|---:|---:|---:|")
for r in rows:
    ratio = f"{r['e2e'] / gw['e2e']:.2f}×" if gw and r is not gw else "—"
    print(f"| {r['system']} | {r['enqueue']:,.0f} | {r['e2e']:,.0f} | {ratio} | "
          f"{r['p50']:.2f} / {r['p99']:.2f} ms | {r['held']:,.0f}/s |")
PY
