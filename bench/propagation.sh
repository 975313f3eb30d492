#!/usr/bin/env bash
# bench/propagation.sh [--tiny]: the control plane at fleet scale, with simulated proxies that
# decode every resource and ACK every update (control-plane/examples/propagation.rs). The
# mesh has 1,000 Services and 10,000 endpoints; each fleet is measured three ways: 20
# rewrites of the mesh file, the same under 50 endpoint changes a second (a rolling
# deploy), and every proxy reconnecting at once after the control plane restarts.
#
#   1,000 proxies in 100 Deployments of 10, unscoped
#   10,000 proxies in 1,000 Deployments of 10, each Deployment scoped to 20 Services
#   10,000 proxies in 1,000 Deployments of 10, unscoped (measured and reported, no goal)
#   and 1,000 proxies over 100 Services, for the CPU per change against the Service count
#   then 10,000 scoped proxies over 3 `trellis-control --kubernetes` replicas, one killed
#   (control-plane/examples/replicas.rs, against the tests' mock API server over HTTP)
#
# Writes one JSON line per fleet to bench/results/propagation.json and prints a table; the
# replica run goes to bench/results/replicas.json.
# --tiny (what CI runs) is a few proxies for a few seconds, to keep the bench working;
# --quick (what bench/run runs) is the 1,000-proxy fleet alone; --replicas is the replica
# run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
# 10,000 streams in each of two processes need more than the default 1,024 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n 20000 2>/dev/null || true
echo "open files limit: $(ulimit -n); ephemeral ports: $(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null | tr '\t' -)"
# The tiny run reuses the debug build that the tests made; the figures need release.
if [[ "${1:-}" == --tiny ]]; then profile=debug; flags=(); else profile=release; flags=(--release); fi
cargo build "${flags[@]}" -q -p trellis-control --bin trellis-control --example propagation --example replicas
mkdir -p bench/results
out=bench/results/propagation.json
replicas_out=bench/results/replicas.json
run() { "./target/$profile/examples/propagation" --results "$out" "$@"; }
replicas() { : >"$replicas_out"; "./target/$profile/examples/replicas" --results "$replicas_out" "$@"; }
if [[ "${1:-}" == --replicas ]]; then
  replicas --name 10k-scoped-3-replicas --proxies 10000 --replicas 3 --calls 20 --rounds "${ROUNDS:-10}"
  exit 0
fi
: >"$out"
if [[ "${1:-}" == --tiny ]]; then
  run --name tiny --proxies 5 --kinds 2 --services 20 --endpoints 100 --rounds 3 --churn 10 --reconnect
  run --name tiny-scoped --proxies 5 --kinds 2 --services 20 --endpoints 100 --rounds 3 --calls 3 --churn 10 --reconnect
  replicas --name tiny-replicas --proxies 30 --replicas 3 --services 10 --calls 3 --rounds 3
else
  rounds=${ROUNDS:-20}
  run --name 1k-unscoped --proxies 1000 --kinds 100 --rounds "$rounds" --churn 50 --reconnect
  [[ "${1:-}" == --quick ]] && { python3 bench/lib/propagation_table.py "$out"; exit 0; }
  run --name 10k-scoped --proxies 10000 --kinds 1000 --calls 20 --rounds "$rounds" --churn 50 --reconnect
  run --name 1k-unscoped-100-services --proxies 1000 --kinds 100 --services 100 --endpoints 1000 --rounds 0 --churn 50
  run --name 10k-unscoped --proxies 10000 --kinds 1000 --rounds "${ROUNDS_10K_UNSCOPED:-5}" --churn 50 --reconnect
  replicas --name 10k-scoped-3-replicas --proxies 10000 --replicas 3 --calls 20 --rounds "${ROUNDS_REPLICAS:-10}"
fi
python3 bench/lib/propagation_table.py "$out"
