#!/usr/bin/env bash
# bench/propagation.sh — control-plane propagation at 100 and 1,000 simulated proxies.
# Builds release binaries, then runs control-plane/examples/propagation.rs twice.
set -euo pipefail
ulimit -n 20000 2>/dev/null || true   # 1,000 streams need more than the default 1,024 descriptors
cd "$(dirname "$0")/.."
cargo build --release -p trellis-control --bin trellis-control --example propagation
for n in 100 1000; do
  ./target/release/examples/propagation --proxies "$n" --services 1000 --endpoints 10000 --kinds 10 --rounds "${ROUNDS:-20}"
done
