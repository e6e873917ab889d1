#!/usr/bin/env bash
# Side-by-side: Weir against the job queues people would pick instead — BullMQ, Celery and
# graphile-worker — on this machine, in one run (issue 6). Not run in CI.
#
#   bash bench/peers/run.sh                 # N=200000 RATE=5000 STEADY_SECONDS=10, ~7 min
#   N=50000 WRITE=0 bash bench/peers/run.sh # a quick look; leaves BENCHMARKS.md alone
#   BATCH=100 bash bench/peers/run.sh  # Weir at `weir bench`'s default batch instead
#
# The same workload for each system: N jobs of a ~100-byte JSON payload, a no-op handler,
# producer and workers running at the same time, completed jobs not retained, each system at
# the settings its documentation recommends for throughput (bulk enqueue where it has one):
#   throughput  enqueue rate (first to last enqueue) and end-to-end rate (first enqueue to
#               last completion)
#   latency     enqueue-to-start p50/p99 while a producer sends a steady RATE jobs/s for
#               STEADY_SECONDS (and the rate it really held)
#   memory      peak RSS of the server-side processes: `weir serve`, the peer's Redis, or
#               the sampled peak sum of PostgreSQL's proportional set sizes
# Peers install from their registries into bench/peers/.work/ (git-ignored). Each Redis is one
# of the benchmark's own, so its memory is the peer's alone; graphile-worker uses the local
# PostgreSQL (PG_URL) in a schema of its own that is dropped at the end. Results go to
# .work/results.jsonl and .work/run.json; report.py prints the table and, with WRITE=1 (the
# default), writes it into BENCHMARKS.md between the `peers:begin`/`peers:end` markers with the
# machine and the date (`python3 bench/peers/report.py .work/results.jsonl .work/run.json
# --write BENCHMARKS.md` renders a finished run again). Celery takes most of the ~7 minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$here/.work"
N=${N:-200000}
RATE=${RATE:-5000}
STEADY_SECONDS=${STEADY_SECONDS:-10} # (not $SECONDS: bash keeps its own)
REDIS_PORT=${REDIS_PORT:-16379}
PORT=${PORT:-7441}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
WRITE=${WRITE:-1}
# (No WEIR_* names here: `weir serve` refuses WEIR_* variables it does not know.)
# Weir's enqueue batch and fetch maximum: the bulk size the peers get (addBulk and addJobs of
# 1,000), so every system moves the same number of jobs per round trip where it can.
BATCH=${BATCH:-1000}
started=$(date +%s)

fail() { echo "bench/peers: $*" >&2; exit 2; }
for tool in node npm python3 redis-server redis-cli psql curl cargo; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (needed to run the peers)"
done
[[ $N =~ ^[1-9][0-9]*$ && $RATE =~ ^[1-9][0-9]*$ && $STEADY_SECONDS =~ ^[1-9][0-9]*$ &&
  $BATCH =~ ^[1-9][0-9]*$ ]] ||
  fail "N, RATE, STEADY_SECONDS and BATCH must be positive integers"
psql "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1 || fail "no PostgreSQL at $PG_URL (set PG_URL)"
redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && fail "port $REDIS_PORT is taken (set REDIS_PORT)"
curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && fail "port $PORT is taken (set PORT)"

mkdir -p "$work"
results="$work/results.jsonl"
: >"$results"
run=$(mktemp -d -p "$work" run.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  (cd "$work/graphile" 2>/dev/null && DATABASE_URL=$PG_URL node graphile.mjs clean 2>/dev/null) || true
  rm -rf "$run"
}
trap cleanup EXIT
stage() { echo "== [$(($(date +%s) - started)) s] $*"; }
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# record SYSTEM VERSION THROUGHPUT_JSON LATENCY_JSON RSS_KIB RSS_HOW DURABILITY SETTINGS: one
# result line from the producer/worker reports ({start, enqueued_at, sent} and {last, p50_ms,
# p99_ms}).
record() {
  python3 - "$@" >>"$results" <<'PY'
import json, sys
system, version, through, steady, rss, how, durability, settings = sys.argv[1:]
(p, w), (sp, sw) = [[json.load(open(f)) for f in x.split(",")] for x in (through, steady)]
print(json.dumps({"system": system, "version": version,
  "enqueue": p["sent"] / ((p["enqueued_at"] - p["start"]) / 1000),
  "e2e": p["sent"] / ((w["last"] - p["start"]) / 1000),
  "held": sp["sent"] / ((sp["enqueued_at"] - sp["start"]) / 1000),
  "p50": sw["p50_ms"], "p99": sw["p99_ms"], "rss_mib": int(rss) / 1024, "rss_how": how,
  "durability": durability, "settings": settings}))
PY
}
start_redis() {
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --logfile "$run/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" info server | awk -F: '/process_id/ {print $2}' | tr -d '\r'
}
redis_version=$(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/')
redis_durability="Redis without fsync (appendonly no, as the local Redis runs): a Redis crash or restart loses acknowledged jobs"

stage "installing peers into $work"
mkdir -p "$work/bullmq" "$work/graphile" "$work/celery-app"
cp "$here/bullmq.mjs" "$work/bullmq/"
cp "$here/graphile.mjs" "$work/graphile/"
cp "$here/celery_bench.py" "$work/celery-app/"
npm_install() { # DIR PACKAGE
  [ -d "$1/node_modules/${2%@*}" ] ||
    (cd "$1" && { [ -f package.json ] || npm init -y >/dev/null; } &&
      npm install "$2" --no-audit --no-fund --silent 2>&1 | grep -v 'Unknown user config' || true)
  [ -d "$1/node_modules/${2%@*}" ] || fail "npm could not install $2"
}
npm_install "$work/bullmq" bullmq@5
# 0.17 is the newest that runs on Node 20 (0.18 needs Node 22.18).
npm_install "$work/graphile" graphile-worker@0.17
if [ ! -x "$work/celery/bin/celery" ]; then
  python3 -m venv "$work/celery"
  "$work/celery/bin/pip" install -q "celery[redis]>=5.4,<6" || fail "pip could not install celery[redis]"
fi
pkg_version() { node -p "require('$1/package.json').version"; }
bullmq_version=$(pkg_version "$work/bullmq/node_modules/bullmq")
graphile_version=$(pkg_version "$work/graphile/node_modules/graphile-worker")
celery_version=$("$work/celery/bin/celery" --version | awk '{print $1}')

stage "building weir (release)"
(cd "$root" && cargo build --release -p weir --locked -q)
weir="$root/target/release/weir"
weir_version="$("$weir" --version | awk '{print $2}') ($(git -C "$root" rev-parse --short HEAD))"
run_weir() { # MODE DURABILITY_TEXT
  local d="$run/weir-$1"
  mkdir -p "$d"
  WEIR_CACHE_DIR="$d/cache" "$weir" serve --listen "127.0.0.1:$PORT" --data-dir "$d/data" \
    --durability "$1" >"$d/serve.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
  local w=("$weir" --server "http://127.0.0.1:$PORT")
  "${w[@]}" queues set bench retention.completed_max=0 >/dev/null
  "${w[@]}" --json bench --jobs "$N" --payload-bytes 100 --batch "$BATCH" --rate "$RATE" \
    --seconds "$STEADY_SECONDS" >"$d/bench.json"
  python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
r = json.load(open(f"{d}/bench.json"))
# The same report shape as the peers': rates turned back into times from a start of 0.
n, l = r["jobs"], r["latency"]
json.dump({"start": 0, "enqueued_at": n / r["enqueue_jobs_per_s"] * 1000, "sent": n}, open(f"{d}/p.json", "w"))
json.dump({"last": n / r["end_to_end_jobs_per_s"] * 1000}, open(f"{d}/w.json", "w"))
json.dump({"start": 0, "enqueued_at": l["jobs"] / l["held_jobs_per_s"] * 1000, "sent": l["jobs"]}, open(f"{d}/sp.json", "w"))
json.dump({"p50_ms": l["p50_ms"], "p99_ms": l["p99_ms"]}, open(f"{d}/sw.json", "w"))
PY
  record "Weir ($1)" "$weir_version" "$d/p.json,$d/w.json" "$d/sp.json,$d/sw.json" \
    "$(peak_rss_kib "$pid")" "VmHWM of weir serve" "$2" \
    "\`weir bench --batch $BATCH\`: enqueue batches and fetches of up to $BATCH, 4 producers and 4 consumers over HTTP/1.1 (the defaults), queue retention.completed_max=0 (deleted at the ack)"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}
stage "weir, durability fsync"
run_weir fsync "fsync (fdatasync, group commit) before every enqueue and ack reply: survives kill -9 and power loss"
stage "weir, durability os"
run_weir os "written to the OS before every reply, synced in the background: survives kill -9, not a power loss"

stage "bullmq $bullmq_version on redis-server $redis_version :$REDIS_PORT"
redis_pid=$(start_redis)
run_bullmq() { # RATE (0: as fast as it goes) OUT_PREFIX
  (cd "$work/bullmq" && REDIS_PORT=$REDIS_PORT N=$N RATE=$1 DURATION=$STEADY_SECONDS \
    node bullmq.mjs work >"$2w.json") &
  local w=$!
  sleep 1 # let the worker connect
  (cd "$work/bullmq" && REDIS_PORT=$REDIS_PORT N=$N RATE=$1 DURATION=$STEADY_SECONDS \
    node bullmq.mjs produce >"$2p.json")
  wait "$w"
}
run_bullmq 0 "$run/b"
run_bullmq "$RATE" "$run/bs"
record "BullMQ" "$bullmq_version" "$run/bp.json,$run/bw.json" "$run/bsp.json,$run/bsw.json" \
  "$(peak_rss_kib "$redis_pid")" "VmHWM of its redis-server" "$redis_durability" \
  "addBulk of 1,000 (4 in flight), one Worker process with concurrency 100, removeOnComplete"

stage "celery $celery_version (prefork, 2 processes) on redis-server $redis_version :$REDIS_PORT"
redis_pid=$(start_redis)
run_celery() { # RATE OUT_PREFIX
  local st="$run/celery-state-$1"
  mkdir -p "$st"
  (cd "$work/celery-app" && REDIS_PORT=$REDIS_PORT RATE=$1 STATE_DIR=$st \
    exec "$work/celery/bin/celery" -A celery_bench worker --pool prefork --concurrency "$(nproc)" \
    --loglevel warning --without-gossip --without-mingle --without-heartbeat >"$st/worker.log" 2>&1) &
  local w=$!
  pids+=("$w")
  for _ in $(seq 200); do [ -f "$st/ready" ] && break; sleep 0.1; done
  [ -f "$st/ready" ] || fail "the celery worker did not start: $(tail -3 "$st/worker.log")"
  (cd "$work/celery-app" && REDIS_PORT=$REDIS_PORT N=$N RATE=$1 DURATION=$STEADY_SECONDS \
    "$work/celery/bin/python" celery_bench.py produce >"$2p.json")
  (cd "$work/celery-app" && STATE_DIR=$st REDIS_PORT=$REDIS_PORT \
    EXPECT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$2p.json") \
    "$work/celery/bin/python" celery_bench.py wait >"$2w.json")
  kill "$w"
  wait "$w" 2>/dev/null || true
}
run_celery 0 "$run/c"
run_celery "$RATE" "$run/cs"
record "Celery" "$celery_version" "$run/cp.json,$run/cw.json" "$run/csp.json,$run/csw.json" \
  "$(peak_rss_kib "$redis_pid")" "VmHWM of its redis-server" \
  "$redis_durability; the worker acknowledges a message as it starts the task (Celery's default), so a worker crash loses it too" \
  "one message per job (Celery has no bulk enqueue) through one pooled producer; worker --pool prefork --concurrency $(nproc) --without-gossip --without-mingle --without-heartbeat, prefetch multiplier 4, task_ignore_result"
redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true

pg_version=$(psql "$PG_URL" -Atqc 'show server_version' | awk '{print $1}')
pg_sync=$(psql "$PG_URL" -Atqc 'show synchronous_commit')
pg_fsync=$(psql "$PG_URL" -Atqc 'show fsync')
stage "graphile-worker $graphile_version on PostgreSQL $pg_version (synchronous_commit=$pg_sync, fsync=$pg_fsync)"
gw() { (cd "$work/graphile" && DATABASE_URL=$PG_URL N=$N DURATION=$STEADY_SECONDS node graphile.mjs "$@"); }
gw clean
gw migrate
python3 "$here/peak_pss.py" postgres >"$run/pg_pss" &
sampler=$!
pids+=("$sampler")
run_graphile() { # RATE OUT_PREFIX
  RATE=$1 gw work >"$2w.json" &
  local w=$!
  sleep 1 # let the worker connect and listen
  RATE=$1 gw produce >"$2p.json"
  wait "$w"
}
run_graphile 0 "$run/g"
run_graphile "$RATE" "$run/gs"
kill -TERM "$sampler"
wait "$sampler" || true
record "graphile-worker" "$graphile_version" "$run/gp.json,$run/gw.json" "$run/gsp.json,$run/gsw.json" \
  "$(cat "$run/pg_pss")" "sampled peak of the summed Pss of all postgres processes" \
  "PostgreSQL $pg_version, synchronous_commit=$pg_sync, fsync=$pg_fsync: every addJobs is on disk before it returns; completions are batched, so a crash reruns the jobs of the last batch" \
  "addJobs of 1,000 (4 in flight); run() with concurrency 24, pool 25, localQueue 5,000 (the fastest of 500/1,000/2,000/5,000 here; its docs' 500 gives ~6,700 jobs/s end to end), completeJobBatchDelay 0"
gw clean

stage "done"
python3 - "$work/run.json" "$N" "$RATE" "$STEADY_SECONDS" "$(($(date +%s) - started))" <<'PY'
import datetime, json, os, platform, subprocess, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 2**20
node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
n, rate, secs, took = (int(x) for x in sys.argv[2:])
json.dump({"date": str(datetime.date.today()), "n": n, "rate": rate, "seconds": secs, "took_s": took,
  "machine": f"{os.cpu_count()} vCPU {cpu}, {mem:.0f} GiB RAM, Linux {platform.release()}, "
             f"Node {node}, Python {platform.python_version()}"}, open(sys.argv[1], "w"))
PY
echo
write=()
[ "$WRITE" = 1 ] && write=(--write "$root/BENCHMARKS.md")
python3 "$here/report.py" "$results" "$work/run.json" "${write[@]}"
