#!/usr/bin/env bash
# bench/proxy-config.sh: what a large config costs trellis-proxy: memory per configured
# endpoint, in both modes, and the time to apply one endpoint changed among 10,000.
#
# Local mode reads a mesh file of N endpoints (10 to a Service); control-plane mode gets the
# same mesh from a real trellis-control over the discovery stream. For N = 1,000 and 10,000
# it prints the proxy's RSS once ready, and the difference per endpoint. bench/run measures
# local mode the same way (with Envoy beside it); this script adds the control-plane mode.
#
# Then, with 10,000 endpoints in control-plane mode, it rewrites the mesh file CHANGES times
# (default 20), each time moving one endpoint to a new address, and reads the proxy's
# trellis_config_apply_duration_seconds histogram: the time from an update's arrival to its
# runtime being swapped in. Writes bench/results/proxy-config.json. With PERF=FILE, perf
# records the proxy's stacks during the rewrites into FILE, for `perf report -i FILE`. With
# HEAPTRACK=FILE, the proxy at 10,000 endpoints runs under heaptrack in both modes, which
# writes FILE-local.zst and FILE.zst (its RSS is then heaptrack's too, so read the profile, not the figures).
# That run's proxy is built with glibc's malloc, which heaptrack sees and jemalloc is not.
set -euo pipefail
cd "$(dirname "$0")/.."
# heaptrack sees only malloc, so its run builds the proxy without jemalloc; the next run
# without HEAPTRACK rebuilds it with.
features=()
if [ -n "${HEAPTRACK:-}" ]; then features=(--no-default-features); fi
cargo build --release -p trellis-proxy --bin trellis-proxy -p trellis-control --bin trellis-control \
  "${features[@]}"
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

# Under heaptrack, $1 is heaptrack's script: stopping the proxy alone lets heaptrack finish
# writing its file, and the script then exits by itself.
stop_proxy() {
  if [ ${#wrap[@]} -gt 0 ]; then
    pkill -TERM -f "release/trellis-proxy --bootstrap" || true
  else
    kill "$1"
  fi
  wait "$1" 2>/dev/null || true
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
  wrap=()
  if [ -n "${HEAPTRACK:-}" ] && [ "$n" = 10000 ]; then wrap=(heaptrack -o "$HEAPTRACK-local"); fi
  (cd "$d" && exec "${wrap[@]}" "$root/target/release/trellis-proxy" --bootstrap boot.yaml --workers 1 >log 2>&1) &
  pid=$!; pids+=("$pid")
  wait_ready "$admin" "$d/log"; sleep 1
  rss[local$n]=$(rss_kib "$pid")
  stop_proxy "$pid"

  # Control-plane mode.
  d="$work/cp$n"; mkdir -p "$d/state"; cp "$work/mesh$n.yaml" "$d/mesh.yaml"
  grpc=$(free_port); http=$(free_port); admin=$(free_port)
  ./target/release/trellis-control --config "$d/mesh.yaml" --grpc-addr "127.0.0.1:$grpc" \
    --http-addr "127.0.0.1:$http" --dashboard-addr off --state-dir "$d/state" --registration-grace 1s >"$d/cp.log" 2>&1 &
  cp=$!; pids+=("$cp")
  wait_ready "$http" "$d/cp.log"
  ./target/release/trellis-control token create --service-account bench/client --state-dir "$d/state" >"$d/token"
  cat >"$d/boot.yaml" <<EOF
workload: {name: client, namespace: bench, serviceAccount: client, labels: {app: client}}
listeners: {outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:$admin}
app: {address: 127.0.0.1, ports: {http: 9}}
controlPlane: {address: "https://127.0.0.1:$grpc", caBundle: $d/state/ca.pem, tokenFile: $d/token}
EOF
  wrap=()
  if [ -n "${HEAPTRACK:-}" ] && [ "$n" = 10000 ]; then wrap=(heaptrack -o "$HEAPTRACK"); fi
  "${wrap[@]}" ./target/release/trellis-proxy --bootstrap "$d/boot.yaml" --workers 1 >"$d/log" 2>&1 &
  pid=$!; pids+=("$pid")
  wait_ready "$admin" "$d/log"; sleep 1
  rss[cp$n]=$(rss_kib "$pid")
  if [ "$n" = 10000 ]; then
    curl -sf "http://127.0.0.1:$admin/metrics" >"$work/before.prom"
    if [ -n "${PERF:-}" ]; then
      perf record -F 20000 --call-graph dwarf,16384 -p "$pid" -o "$PERF" 2>/dev/null &
      perf_pid=$!
    fi
    for i in $(seq "${CHANGES:-20}"); do
      # One Workload moves: one endpoint of one cluster changes, nothing else.
      python3 - "$d/mesh.yaml" "$i" <<'EOF'
import re, sys
path, i = sys.argv[1], int(sys.argv[2])
text = open(path).read()
text = re.sub(r"(name: svc-0-0, .*\nspec: \{address: )[0-9.]+", lambda m: m.group(1) + f"127.250.0.{i}", text, count=1)
open(path, "w").write(text)
EOF
      sleep 1.5
    done
    curl -sf "http://127.0.0.1:$admin/metrics" >"$work/after.prom"
    if [ -n "${perf_pid:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  fi
  stop_proxy "$pid"
  kill "$cp"; wait "$cp" 2>/dev/null || true
done

mkdir -p bench/results
python3 - "${rss[local1000]}" "${rss[local10000]}" "${rss[cp1000]}" "${rss[cp10000]}" "$work" "${CHANGES:-20}" <<'EOF'
import json, os, sys, time
l1, l10, c1, c10 = (int(x) for x in sys.argv[1:5])
work, changes = sys.argv[5], int(sys.argv[6])

def histogram(path):
    """The apply histogram's cumulative buckets, sum and count."""
    h = {"buckets": {}, "sum": 0.0, "count": 0.0}
    for line in open(path):
        if not line.startswith("trellis_config_apply_duration_seconds"):
            continue
        name, value = line.rsplit(" ", 1)
        if "_bucket" in name:
            h["buckets"][name.split('le="')[1].split('"')[0]] = float(value)
        elif name.endswith("_sum"):
            h["sum"] = float(value)
        elif name.endswith("_count"):
            h["count"] = float(value)
    return h

before, after = histogram(f"{work}/before.prom"), histogram(f"{work}/after.prom")
applied = int(after["count"] - before["count"])
buckets = {le: int(n - before["buckets"].get(le, 0)) for le, n in after["buckets"].items()}
mean_ms = (after["sum"] - before["sum"]) / applied * 1000 if applied else None
per = lambda a, b: round((b - a) * 1024 / 9000)
out = {
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "loadavg": os.getloadavg(),
    "rss_kib": {"local": {"1000": l1, "10000": l10}, "control_plane": {"1000": c1, "10000": c10}},
    "bytes_per_endpoint": {"local": per(l1, l10), "control_plane": per(c1, c10)},
    "apply_one_endpoint_of_10000": {
        "rewrites": changes,
        "applied": applied,
        "mean_ms": mean_ms,
        "cumulative_buckets_seconds": buckets,
    },
}
json.dump(out, open("bench/results/proxy-config.json", "w"), indent=1)
print(f"local mode:         RSS {l1/1024:.1f} MiB at 1,000 endpoints, {l10/1024:.1f} MiB at 10,000: {per(l1, l10)} bytes per endpoint")
print(f"control-plane mode: RSS {c1/1024:.1f} MiB at 1,000 endpoints, {c10/1024:.1f} MiB at 10,000: {per(c1, c10)} bytes per endpoint")
if applied:
    print(f"one endpoint changed among 10,000: {applied} of {changes} rewrites applied, mean {mean_ms:.3f} ms; "
          f"under 1 ms: {buckets.get('0.001', 0)}, under 2.5 ms: {buckets.get('0.0025', 0)}")
else:
    print("one endpoint changed among 10,000: no update was applied; see the proxy's log")
EOF
