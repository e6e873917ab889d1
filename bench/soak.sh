#!/usr/bin/env bash
# Memory under a steady load (DESIGN: "flat under a 10-minute soak"): a fresh `weir serve`
# at its defaults (durable, completed jobs kept by the default retention: the 100,000 most
# recent for a day) takes a steady RATE jobs/s from `weir bench` for SECONDS; the server's
# RSS is sampled every second and the queue's counts every 5 s. Prints the RSS at each
# minute and whether it stayed flat, and draws bench/.work/soak.svg. Not run in CI.
#
#   bash bench/soak.sh                          # 10 minutes at 5,000 jobs/s
#   RATE=20000 SECONDS_=120 bash bench/soak.sh  # shorter and harder
#
# "Flat": the mean RSS of the last third of the run is within 5 % of the middle third's (the
# first third is warm-up: retention fills up to the completed jobs it keeps; a flush
# sawtooth averages out over a third). The run's figures go to bench/.work/soak.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
RATE=${RATE:-5000}
SECONDS_=${SECONDS_:-600} # (not $SECONDS: bash keeps its own)
PORT=${PORT:-7444}

fail() { echo "bench/soak: $*" >&2; exit 2; }
[[ $RATE =~ ^[1-9][0-9]*$ && $SECONDS_ =~ ^[1-9][0-9]*$ ]] || fail "RATE and SECONDS_ must be positive integers"
((SECONDS_ >= 30)) || fail "SECONDS_ must be at least 30 (a warm-up and a last minute to compare)"
curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && fail "port $PORT is taken (set PORT)"

echo "== building weir (release)"
(cd "$root" && cargo build --release -p weir --locked -q)
weir="$root/target/release/weir"
mkdir -p "$here/.work"
run=$(mktemp -d -p "$here/.work" soak.XXXXXX)
server="" sampler=""
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT

WEIR_CACHE_DIR="$run/cache" "$weir" serve --listen "127.0.0.1:$PORT" --data-dir "$run/data" \
  >"$run/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || fail "the server did not start: $(tail -3 "$run/serve.log")"

# The sampler: one line a second (t, rss KiB), the queue's counts every fifth.
python3 - "$server" "$PORT" "$run/samples.jsonl" <<'PY' &
import json, sys, time, urllib.request
pid, port, out = sys.argv[1], sys.argv[2], open(sys.argv[3], "w", buffering=1)
start, n = time.time(), 0
while True:
    try:
        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
    except (OSError, StopIteration):
        break
    row = {"t": round(time.time() - start, 2), "rss_kib": rss}
    if n % 5 == 0:
        try:
            q = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/queues/bench", timeout=2))
            row["counts"] = q["counts"]
        except Exception:
            pass
    out.write(json.dumps(row) + "\n")
    n += 1
    time.sleep(max(0.0, start + n - time.time()))
PY
sampler=$!

echo "== $SECONDS_ s at $RATE jobs/s against a fresh server (default retention)"
"$weir" --server "http://127.0.0.1:$PORT" --json bench --jobs 1000 --rate "$RATE" \
  --seconds "$SECONDS_" >"$run/bench.json"
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=""
python3 "$here/soak_report.py" "$run/samples.jsonl" "$run/bench.json" "$RATE" \
  "$here/.work/soak.json" "$here/.work/soak.svg"
