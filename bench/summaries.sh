#!/usr/bin/env bash
# bench/summaries.sh — what the proxies' golden-metrics summaries cost trellis-control: the
# window filled to 15 minutes by 1,000 proxies (time per intake, memory, Stat), then a real
# control plane with 1,000 simulated proxies, its CPU and RSS without summaries and with one
# per proxy every 5 s. Runs control-plane/examples/summaries.rs; prints figures and keeps them
# in bench/results/summaries-<date>.txt; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p trellis-control --bin trellis-control --example summaries
out="bench/results/summaries-$(date -u +%Y%m%d-%H%M%S).txt"
{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  ./target/release/examples/summaries --proxies "${PROXIES:-1000}" --seconds "${SECONDS_EACH:-60}"
} | tee "$out"
