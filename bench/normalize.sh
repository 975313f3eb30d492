#!/usr/bin/env bash
# bench/normalize.sh — instructions per request spent on path normalization, by callgrind
# (repeatable: it counts instructions, not seconds, so the machine's load does not matter).
# Runs sidecar/examples/normalize_cost.rs with 0 and N paths of each kind; the difference
# over N is the cost of one normalization.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
cargo build --release -p trellis-proxy --example normalize_cost
bin=target/release/examples/normalize_cost
n=${N:-100000}
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
base=$(count none "$n")
for kind in normal dots encoded; do
  total=$(count "$kind" "$n")
  echo "$kind: $(( (total - base) / n )) instructions per path (callgrind, N=$n)"
done
