#!/usr/bin/env bash
# mille's render time and peak memory on synthetic plans of 100 to 10,000 changes (about 2 KB
# of attribute values each, 20 modules), beside Graphviz `dot -Tsvg` laying out the DOT of the
# same graph. Prints a Markdown table for BENCHMARKS.md.
#
#   bash bench/mille.sh            # needs graphviz (apt-get install graphviz) and GNU time
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p mille
mille=./target/release/mille
command -v dot >/dev/null || apt-get install -y -q graphviz >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
runs=${RUNS:-7}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { # wall time of a command in ms
  local t0 t1
  t0=$(date +%s%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}

echo "| changes | plan | mille render, cold (median of $runs) | mille peak RSS | warm (cached, median) | dot -Tsvg | dot peak RSS |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for n in 100 1000 3000 10000; do
  plan="$work/plan-$n.json"
  "$mille" synth "$n" 20 --bytes 2000 > "$plan"
  size=$(du -k "$plan" | cut -f1)
  out="$work/out-$n"
  # What a user runs: graph.svg, graph.html and summary.md (the DOT for Graphviz is written
  # by one more, untimed run).
  times=$(for _ in $(seq "$runs"); do ms "$mille" render "$plan" --no-cache --out "$out"; done | median)
  rss=$(/usr/bin/time -f %M "$mille" render "$plan" --no-cache --out "$out" 2>&1 >/dev/null | tail -1)
  export MILLE_CACHE_DIR="$work/cache"
  "$mille" render "$plan" --out "$out"
  warm=$(for _ in $(seq "$runs"); do ms "$mille" render "$plan" --out "$out"; done | median)
  unset MILLE_CACHE_DIR
  "$mille" render "$plan" --no-cache --out "$out" --format dot
  dot_ms=$(ms timeout 600 dot -Tsvg "$out/graph.dot" -o "$work/dot.svg")
  dot_rss=$(/usr/bin/time -f %M timeout 600 dot -Tsvg "$out/graph.dot" -o "$work/dot.svg" 2>&1 | tail -1)
  mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
  echo "| $n | $((size / 1024)) MiB | $times ms | $(mib "$rss") MiB | $warm ms | $dot_ms ms | $(mib "$dot_rss") MiB |"
done
