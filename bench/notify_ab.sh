#!/usr/bin/env bash
# A/B of weir-notify builds on a machine whose speed drifts: runs the given binaries one after
# another, ROUNDS times, each on the same bulk send, and prints messages/s and the CPU seconds
# (user + system, setup included) of every run. Keep a build with `cp target/release/weir-notify
# /tmp/before`, change the code, build again, then:
#   bash bench/notify_ab.sh /tmp/before target/release/weir-notify
# ROUNDS (3), SUBSCRIBERS (1000000), PROBE_MS (0: no password resets; 100: the script's) change it.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench/notify_ab.sh BINARY [BINARY ...]" >&2; exit 2; }
for b in "$@"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
export NOTIFY_LOG=error
times=$(mktemp)
trap 'rm -f "$times"' EXIT
for _ in $(seq 1 "${ROUNDS:-3}"); do
  for b in "$@"; do
    out=$(/usr/bin/time -o "$times" -f "cpu %U %S" "$b" bench \
      --subscribers "${SUBSCRIBERS:-1000000}" --provider sendgrid \
      --probe-ms "${PROBE_MS:-0}" 2>/dev/null)
    rate=$(grep -o '[0-9]* messages/s' <<<"$out" | head -1)
    cpu=$(awk '/^cpu / {print $2 + $3}' "$times")
    echo "$b: $rate, cpu $cpu s"
  done
done
