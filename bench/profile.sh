#!/usr/bin/env bash
# Where a Weir server's time goes under `weir bench` (issue 6): the CPU budget of the run
# (server, load generator, idle) and the server's on-CPU samples sorted into kinds of work
# (HTTP, JSON, engine, fjall, fsync, TCP, allocator, ...). Not run in CI; needs Linux `perf`.
#
#   bash bench/profile.sh                  # durable (fsync) mode, 200,000 jobs, batches of 1,000
#   MODE=os N=500000 bash bench/profile.sh # os durability, a longer run
#   BATCH=100 bash bench/profile.sh        # at `weir bench`'s default batch
#
# BATCH defaults to what bench/peers/run.sh gives Weir, so the profile explains that table.
#
# The server is built with frame pointers into target/profiling (a separate target dir, so
# the normal release build is untouched) so that perf's stacks reach from the kernel up to
# our code. With `inferno-collapse-perf` and `inferno-flamegraph` on the PATH
# (`cargo install inferno`), it also writes bench/.work/profile.svg, a flame graph.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
N=${N:-200000}
MODE=${MODE:-fsync}
PORT=${PORT:-7443}
FREQ=${FREQ:-1999}
BATCH=${BATCH:-1000}

fail() { echo "bench/profile: $*" >&2; exit 2; }
command -v perf >/dev/null || fail "perf is not installed (Debian: apt-get install linux-perf)"
[[ $N =~ ^[1-9][0-9]*$ && $BATCH =~ ^[1-9][0-9]*$ ]] || fail "N and BATCH must be positive integers"
[[ $MODE == fsync || $MODE == os ]] || fail "MODE must be fsync or os"
curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && fail "port $PORT is taken (set PORT)"

echo "== building weir with frame pointers (target/profiling)"
(cd "$root" && CARGO_TARGET_DIR="$root/target/profiling" \
  RUSTFLAGS="-C force-frame-pointers=yes" CFLAGS="-fno-omit-frame-pointer" \
  cargo build --release -p weir --locked -q)
weir="$root/target/profiling/release/weir"

mkdir -p "$here/.work"
run=$(mktemp -d -p "$here/.work" profile.XXXXXX)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$run"
}
trap cleanup EXIT

WEIR_CACHE_DIR="$run/cache" "$weir" serve --listen "127.0.0.1:$PORT" --data-dir "$run/data" \
  --durability "$MODE" >"$run/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || fail "the server did not start: $(tail -3 "$run/serve.log")"
w=("$weir" --server "http://127.0.0.1:$PORT")
"${w[@]}" queues set bench retention.completed_max=0 >/dev/null
echo "== warm-up (50,000 jobs)"
"${w[@]}" --json bench --jobs 50000 --batch "$BATCH" --rate 0 >/dev/null

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in clock ticks
before=$(ticks "$server")
echo "== recording the server while \`weir bench --jobs $N --batch $BATCH --rate 0\` runs ($MODE)"
perf record -F "$FREQ" -g -o "$run/perf.data" -p "$server" 2>"$run/perf.log" &
perf=$!
for _ in $(seq 50); do grep -q . "$run/perf.log" 2>/dev/null && break; sleep 0.1; done # perf says when it is attached
TIMEFORMAT='%R %U %S'
{ time "${w[@]}" --json bench --jobs "$N" --batch "$BATCH" --rate 0 >"$run/bench.json"; } 2>"$run/time.txt"
after=$(ticks "$server")
kill -INT "$perf"
wait "$perf" || true

perf script -i "$run/perf.data" -F comm,ip,sym 2>/dev/null >"$run/stacks.txt"
python3 - "$run" "$before" "$after" "$(getconf CLK_TCK)" "$(nproc)" "$MODE" "$BATCH" <<'PY'
import json, sys
run, mode, batch = sys.argv[1], sys.argv[6], sys.argv[7]
before, after, hz, cores = (int(x) for x in sys.argv[2:6])
b = json.load(open(f"{run}/bench.json"))
wall, cu, cs = (float(x) for x in open(f"{run}/time.txt").read().split()[-3:])
server = (after - before) / hz
client = cu + cs
e2e = b["end_to_end_jobs_per_s"]
busy = b["jobs"] / e2e  # the measured run, first enqueue to the last ack
print(f"\n{b['jobs']:,} jobs in batches of {batch}, durability {mode}: {e2e:,.0f} jobs/s end to end, {b['enqueue_jobs_per_s']:,.0f} enqueued/s")
print(f"CPU over the bench command's {wall:.2f} s on {cores} cores ({cores * wall:.2f} core-seconds):")
print(f"  server       {server:6.2f} s  ({server / (cores * wall):.0%})  = {server / b['jobs'] * 1e6:.1f} µs per job (enqueue + fetch + ack)")
print(f"  load (bench) {client:6.2f} s  ({client / (cores * wall):.0%})")
print(f"  idle         {max(0.0, cores * wall - server - client):6.2f} s  ({max(0.0, 1 - (server + client) / (cores * wall)):.0%})")
PY
echo
python3 "$here/profile_report.py" <"$run/stacks.txt"
if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
  perf script -i "$run/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph --title "weir serve under weir bench ($MODE)" \
    >"$here/.work/profile.svg"
  echo "(flame graph: bench/.work/profile.svg)"
fi
