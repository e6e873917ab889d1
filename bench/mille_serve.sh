#!/usr/bin/env bash
# mille serve: 10 PRs of 3,000 changes each through signed webhooks, an embedded Weir and a
# GitHub stub; prints one JSON line (seconds to accept all ten, seconds until the tenth comment).
#
#   bash bench/mille_serve.sh [PRS] [CHANGES]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p mille
python3 bench/mille_serve.py ./target/release/mille "${1:-10}" "${2:-3000}"
