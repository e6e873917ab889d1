#!/usr/bin/env bash
# periodic beside ast-grep, jscpd and semgrep on one reproducible corpus: the Rust sources
# (*.rs only) of every crate this repository's Cargo.lock pins (`cargo vendor`). Prints
# Markdown rows for BENCHMARKS.md: wall time, files/s and peak RSS of each, then periodic's
# match latency and its memory per 1,000 patterns.
#
#   bash bench/periodic.sh            # peers are used when on PATH (or PEERS_VENV/bin):
#     npm install -g jscpd; python3 -m venv /opt/peers-venv &&
#     /opt/peers-venv/bin/pip install semgrep ast-grep-cli
#   ONLY_PERIODIC=1 leaves every peer out; SKIP_JSCPD=1 leaves jscpd out (on 12,000 files it runs for minutes and can exhaust
#   Node's heap).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p periodic
periodic=$PWD/target/release/periodic
venv=${PEERS_VENV:-/opt/peers-venv}
[ -d "$venv/bin" ] && export PATH="$venv/bin:$PATH"
corpus=${CORPUS:-$PWD/target/bench-corpus}
if [ ! -d "$corpus" ]; then
  vendor=$(mktemp -d)
  cargo vendor -q --versioned-dirs "$vendor" >/dev/null
  (cd "$vendor" && find . -name '*.rs' -print0 | rsync -a --files-from=- --from0 ./ "$corpus/")
  rm -rf "$vendor"
fi
files=$(find "$corpus" -name '*.rs' | wc -l)
mb=$(du -sm --apparent-size "$corpus" | cut -f1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "corpus: $files .rs files, $mb MB ($corpus)"
echo

# wall seconds and peak RSS (MiB) of a command: "S MIB"
measure() {
  /usr/bin/time -f "%e %M %x" -o "$work/t" "$@" >"$work/out" 2>"$work/err" || true
  awk '{ printf "%.2f %.0f %d", $1, $2 / 1024, $3 }' "$work/t" 2>/dev/null | tail -1
}
row() { # name, "S MIB EXIT", files
  read -r s m code <<<"$2"
  if [ "${code:-1}" != 0 ] && [ "${code:-1}" != 1 ]; then
    echo "| $1 | failed (exit ${code:-?}: $(head -c 200 "$work/err" | tr '\n' ' ')) | | |"
    return
  fi
  awk -v n="$1" -v s="$s" -v m="$m" -v f="$3" \
    'BEGIN { printf "| %s | %.2f s | %.0f files/s | %d MiB |\n", n, s, (s > 0 ? f / s : 0), m }'
}

echo "| tool | wall | rate | peak RSS |"
echo "|---|---:|---:|---:|"
idx="$work/index"
row "periodic index (cold)" "$(measure "$periodic" index "$corpus" --index "$idx" --json)" "$files"
cp "$work/out" "$work/cold.json"
row "periodic index (nothing changed)" "$(measure "$periodic" index "$corpus" --index "$idx" --json)" "$files"
edit=$(find "$corpus" -name '*.rs' | sort | sed -n 100p)
cp "$edit" "$work/edit.bak"
printf '\nfn periodic_bench_edit(a: u32, b: u32) -> u32 {\n    let c = a.wrapping_mul(31) ^ b;\n    if c > 7 { c - 7 } else { c + a }\n}\n' >>"$edit"
row "periodic index (one file edited)" "$(measure "$periodic" index "$corpus" --index "$idx" --json)" "$files"
cp "$work/edit.bak" "$edit"
"$periodic" index "$corpus" --index "$idx" >/dev/null
# The floor under any tree-sitter index: every file read and parsed on both cores, the
# trees dropped (then also every node stepped through once), in the same run as the peers.
row "tree-sitter parse alone (periodic ceiling)" "$(measure "$periodic" ceiling "$corpus")" "$files"
row "tree-sitter parse + a cursor over every node (periodic ceiling --visit)" "$(measure "$periodic" ceiling --visit "$corpus")" "$files"
if command -v ast-grep >/dev/null && [ -z "${ONLY_PERIODIC:-}" ]; then
  row "ast-grep run -p 'fn \$F(\$\$\$A) { \$\$\$B }'" \
    "$(measure ast-grep run --lang rust -p 'fn $F($$$A) { $$$B }' "$corpus")" "$files"
fi
if command -v jscpd >/dev/null && [ -z "${SKIP_JSCPD:-}${ONLY_PERIODIC:-}" ]; then
  row "jscpd (clones, min 5 lines / 50 tokens)" \
    "$(measure jscpd --silent --min-lines 5 --min-tokens 50 --format rust --reporters json --output "$work/jscpd" "$corpus")" "$files"
fi
if command -v semgrep >/dev/null && [ -z "${ONLY_PERIODIC:-}" ]; then
  cat >"$work/rule.yml" <<'EOF'
rules:
  - id: unsafe-block
    languages: [rust]
    severity: INFO
    message: unsafe block
    pattern: "unsafe { ... }"
EOF
  row "semgrep (one rule)" \
    "$(SEMGREP_ENABLE_VERSION_CHECK=0 SEMGREP_SEND_METRICS=off measure semgrep --config "$work/rule.yml" --metrics off --disable-version-check --quiet --jobs 2 "$corpus")" "$files"
fi
echo
echo "periodic's figures: $(cat "$work/cold.json")"

# Match latency, each a whole `periodic match` process; the reply's own "ms" is the time
# inside it (index open, the probe from the index or a parse of its file, lookups). Two sets:
# the 200 biggest patterns (the probes with the most token hashes: the worst case), and 200
# places drawn at random (seeded) from the corpus's files and lines (ordinary code, mostly
# seen once).
"$periodic" patterns --index "$idx" --json --limit 200 |
  python3 -c '
import json, sys
for line in sys.stdin:
    loc = json.loads(line)["locations"][0]
    print(loc["file"] + ":" + str(loc["start_line"]))' >"$work/places"
(cd "$corpus" && python3 -c '
import os, random
random.seed(7)
files = sorted(os.path.join(d, f)[2:] for d, _, fs in os.walk(".") for f in fs if f.endswith(".rs"))
for f in random.sample(files, min(200, len(files))):
    with open(f, errors="ignore") as h:
        n = sum(1 for _ in h)
    print(f + ":" + str(random.randint(1, max(1, n))))') >"$work/random"
for set in places random; do
  : >"$work/ms"
  while read -r place; do
    (cd "$corpus" && "$periodic" match --index "$idx" --json "$place" 2>/dev/null) |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["ms"])' >>"$work/ms" 2>/dev/null || true
  done <"$work/$set"
  what=$([ "$set" = places ] && echo "the 200 biggest patterns" || echo "200 random places")
  sort -n "$work/ms" | awk -v what="$what" '{ a[NR] = $1 } END {
    printf "match (in process), %s: p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d probes\n", what, a[int(NR * 0.5)], a[int(NR * 0.99)], a[NR], NR }'
done
read -r ms_s ms_m _ <<<"$(measure "$periodic" match --index "$idx" "$(head -1 "$work/places")")"
echo "match (whole process): $ms_s s, peak RSS $ms_m MiB"
patterns=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["patterns"])' "$work/cold.json")
read -r _ q_m _ <<<"$(measure "$periodic" patterns --index "$idx" --limit 0 --json)"
awk -v p="$patterns" -v m="$q_m" -v size="$(du -m "$idx" | cut -f1)" 'BEGIN {
  printf "patterns: %d; index %d MB; listing every pattern peaks at %d MiB = %.2f MiB per 1,000 patterns\n", p, size, m, m / (p / 1000) }'
