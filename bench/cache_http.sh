#!/usr/bin/env bash
# Cache GET throughput over HTTP: `weir serve` answering GET /v1/cache/{ns}/{key} from its
# memory tier, against redis-benchmark's GET on the local Redis, same machine, same load
# shape (50 connections, one request in flight per connection, 1,000 keys of 100 bytes, one
# load-generator thread each).
# The load generators share the machine's cores with the servers.
#
#   bash bench/cache_http.sh            # 10 s per side
#   DURATION=30 bash bench/cache_http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
PORT=${PORT:-7431}
command -v wrk >/dev/null || { echo "installing wrk (Debian)"; apt-get install -y wrk >/dev/null; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing (apt-get install redis-tools)"; exit 1; }
cargo build --release -p weir --locked -q
tmp=$(mktemp -d)
WEIR_CACHE_DIR="$tmp/cache" target/release/weir serve --listen 127.0.0.1:$PORT --data-dir "$tmp/data" >"$tmp/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.1; done
value=$(head -c 100 /dev/zero | tr '\0' 'x')
for i in $(seq 1 1000); do
  curl -sf -X PUT --data-binary "$value" "http://127.0.0.1:$PORT/v1/cache/bench/k$i?ttl_ms=3600000" >/dev/null
done
cat >"$tmp/keys.lua" <<'LUA'
request = function()
  return wrk.format("GET", "/v1/cache/bench/k" .. math.random(1, 1000))
end
LUA
echo "== weir: GET /v1/cache over HTTP ($CONNS connections, ${DURATION}s)"
wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$tmp/keys.lua" "http://127.0.0.1:$PORT" | tee "$tmp/wrk.txt"
weir_rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")
hits=$(curl -s http://127.0.0.1:$PORT/v1/cache | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["memory"]["hits"], d["memory"]["misses"])')
echo "memory tier hits, misses: $hits"
echo "== redis-benchmark -t get on 127.0.0.1:6379 ($CONNS connections)"
redis-benchmark -h 127.0.0.1 -p 6379 -t set -n 100000 -c "$CONNS" -d 100 -r 1000 -q >/dev/null
n=$(python3 -c "print(int(float('$weir_rps') * $DURATION) if float('$weir_rps') > 0 else 1000000)")
redis-benchmark -h 127.0.0.1 -p 6379 -t get -n "$n" -c "$CONNS" -d 100 -r 1000 -q | tee "$tmp/redis.txt"
redis_rps=$(tr '\r' '\n' <"$tmp/redis.txt" | awk '/GET:/ {print $2}' | tail -1)
echo
echo "| | requests/s |"
echo "|---|---:|"
echo "| weir GET /v1/cache (HTTP/1.1, memory tier) | $weir_rps |"
echo "| redis-benchmark -t get (RESP) | $redis_rps |"
python3 -c "print(f'| ratio weir / redis | {float(\"$weir_rps\") / float(\"$redis_rps\"):.2f} |')"
