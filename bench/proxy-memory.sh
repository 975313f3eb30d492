#!/usr/bin/env bash
# bench/proxy-memory.sh: trellis-proxy's memory per configured endpoint, in both modes.
#
# Local mode reads a mesh file of N endpoints (10 to a Service); control-plane mode gets the
# same mesh from a real trellis-control over the discovery stream. For N = 1,000 and 10,000
# it prints the proxy's RSS once ready, and the difference per endpoint. bench/run measures
# local mode the same way (with Envoy beside it); this script adds the control-plane mode.
# Writes bench/results/proxy-memory.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p trellis-proxy --bin trellis-proxy -p trellis-control --bin trellis-control
root=$(pwd)
work=$(mktemp -d /tmp/trellis-proxy-memory.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
python3 - "$work" <<'EOF'
import sys
sys.path.insert(0, "bench")
from lib import configs
for n in (1000, 10000):
    open(f"{sys.argv[1]}/mesh{n}.yaml", "w").write(configs.trellis_mesh_endpoints(n))
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
wait_ready() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return 0
    sleep 0.1
  done
  echo "not ready: see $2" >&2
  return 1
}

declare -A rss
for n in 1000 10000; do
  # Local mode.
  d="$work/local$n"; mkdir -p "$d"; cp "$work/mesh$n.yaml" "$d/mesh.yaml"
  admin=$(free_port)
  cat >"$d/boot.yaml" <<EOF
workload: {name: client, namespace: bench, serviceAccount: client, labels: {app: client}}
listeners: {outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:$admin}
app: {address: 127.0.0.1, ports: {http: 9}}
meshFile: mesh.yaml
EOF
  (cd "$d" && exec "$root/target/release/trellis-proxy" --bootstrap boot.yaml --workers 1 >log 2>&1) &
  pid=$!; pids+=("$pid")
  wait_ready "$admin" "$d/log"; sleep 1
  rss[local$n]=$(rss_kib "$pid"); kill "$pid"; wait "$pid" 2>/dev/null || true

  # Control-plane mode.
  d="$work/cp$n"; mkdir -p "$d/state"; cp "$work/mesh$n.yaml" "$d/mesh.yaml"
  grpc=$(free_port); http=$(free_port); admin=$(free_port)
  ./target/release/trellis-control --config "$d/mesh.yaml" --grpc-addr "127.0.0.1:$grpc" \
    --http-addr "127.0.0.1:$http" --state-dir "$d/state" --registration-grace 1s >"$d/cp.log" 2>&1 &
  cp=$!; pids+=("$cp")
  wait_ready "$http" "$d/cp.log"
  ./target/release/trellis-control token create --service-account bench/client --state-dir "$d/state" >"$d/token"
  cat >"$d/boot.yaml" <<EOF
workload: {name: client, namespace: bench, serviceAccount: client, labels: {app: client}}
listeners: {outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:$admin}
app: {address: 127.0.0.1, ports: {http: 9}}
controlPlane: {address: "https://127.0.0.1:$grpc", caBundle: $d/state/ca.pem, tokenFile: $d/token}
EOF
  ./target/release/trellis-proxy --bootstrap "$d/boot.yaml" --workers 1 >"$d/log" 2>&1 &
  pid=$!; pids+=("$pid")
  wait_ready "$admin" "$d/log"; sleep 1
  rss[cp$n]=$(rss_kib "$pid"); kill "$pid" "$cp"; wait "$pid" "$cp" 2>/dev/null || true
done

mkdir -p bench/results
python3 - "${rss[local1000]}" "${rss[local10000]}" "${rss[cp1000]}" "${rss[cp10000]}" <<'EOF'
import json, os, sys, time
l1, l10, c1, c10 = (int(x) for x in sys.argv[1:])
per = lambda a, b: round((b - a) * 1024 / 9000)
out = {
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "loadavg": os.getloadavg(),
    "rss_kib": {"local": {"1000": l1, "10000": l10}, "control_plane": {"1000": c1, "10000": c10}},
    "bytes_per_endpoint": {"local": per(l1, l10), "control_plane": per(c1, c10)},
}
json.dump(out, open("bench/results/proxy-memory.json", "w"), indent=1)
print(f"local mode:         RSS {l1/1024:.1f} MiB at 1,000 endpoints, {l10/1024:.1f} MiB at 10,000: {per(l1, l10)} bytes per endpoint")
print(f"control-plane mode: RSS {c1/1024:.1f} MiB at 1,000 endpoints, {c10/1024:.1f} MiB at 10,000: {per(c1, c10)} bytes per endpoint")
EOF
