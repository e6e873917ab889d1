#!/usr/bin/env bash
# What each flow control costs end to end through HTTP: the same `weir bench` throughput run
# with no controls, with a (non-binding) queue rate limit, a (non-binding) concurrency
# limit, a circuit breaker, and ordered groups over 10,000 groups. One fresh server per
# scenario, durable default. Usage: bench/flow_cost.sh [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-200000}
PORT=7431
cargo build --release -q -p weir
WEIR=target/release/weir
run() {
  local name=$1; shift
  local dir; dir=$(mktemp -d)
  $WEIR serve --listen 127.0.0.1:$PORT --data-dir "$dir" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/ready >/dev/null && break; sleep 0.1; done
  local out
  out=$($WEIR --server http://127.0.0.1:$PORT --json bench --jobs "$JOBS" --rate 0 "$@")
  kill -TERM $pid; wait $pid || true
  rm -rf "$dir"
  printf '| %s | %s | %.0f |\n' "$name" "$*" "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["end_to_end_jobs_per_s"])')"
}
echo "| scenario | flags | end-to-end jobs/s |"
echo "|---|---|---|"
run "no controls"
run "queue rate limit 1,000,000/s" --queue-rate 1000000
run "queue concurrency 1,000" --queue-concurrency 1000
run "circuit breaker" --breaker
run "ordered groups over 10,000 groups" --groups 10000
run "per-key concurrency 3 over 10,000 keys" --groups 10000 --group-concurrency 3
run "per-key rate limit 1,000/s over 10,000 keys" --groups 10000 --group-concurrency 100 --group-rate 1000
run "all of the above" --queue-rate 1000000 --queue-concurrency 1000 --breaker --groups 10000 --group-concurrency 3 --group-rate 1000
