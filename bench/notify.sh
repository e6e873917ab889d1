#!/usr/bin/env bash
# weir-notify end to end: one process with an embedded Weir, the pipeline's workers and the
# stub providers (all on this machine's cores), from trigger to the stub provider's
# acceptance. Prints the lines BENCHMARKS.md records:
#   - a bulk send to a topic of 1,000,000 subscribers through a batching provider (SendGrid's
#     shape: 1,000 personalizations per call), with a password reset probed every 100 ms;
#   - 100,000 through a provider that takes one message per call (Twilio's shape);
#   - 10,000,000 subscribers stored: memory and disk.
#   BULK=N, UNBATCHED=N and SUBSCRIBERS=N change the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p weir-notify
bin=$PWD/target/release/weir-notify
export NOTIFY_LOG=error
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%F)"
echo "== batched (sendgrid, 1,000 per call)"
"$bin" bench --subscribers "${BULK:-1000000}" --provider sendgrid 2>/dev/null
echo "== unbatched (twilio, one per call)"
"$bin" bench --subscribers "${UNBATCHED:-100000}" --provider twilio 2>/dev/null
echo "== subscribers stored"
"$bin" bench --subscribers "${SUBSCRIBERS:-10000000}" --setup-only 2>/dev/null
