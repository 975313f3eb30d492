#!/usr/bin/env bash
# bench/propagation.sh — control-plane propagation with simulated proxies (1,000 Services,
# 10,000 endpoints): 100 and 1,000 unscoped proxies of 10 kinds, then 1,000 proxies of 100
# kinds unscoped and under Scopes of 20 Services each. Builds release binaries, then runs
# control-plane/examples/propagation.rs once per fleet.
set -euo pipefail
ulimit -n 20000 2>/dev/null || true   # 1,000 streams need more than the default 1,024 descriptors
cd "$(dirname "$0")/.."
cargo build --release -p trellis-control --bin trellis-control --example propagation
run() { ./target/release/examples/propagation --services 1000 --endpoints 10000 --rounds "${ROUNDS:-20}" "$@"; }
for n in 100 1000; do
  run --proxies "$n" --kinds 10
done
run --proxies 1000 --kinds 100
run --proxies 1000 --kinds 100 --calls 20
