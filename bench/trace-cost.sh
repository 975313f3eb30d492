#!/usr/bin/env bash
# bench/trace-cost.sh [PROXY_BINARY]
#
# What tracing costs the proxy: its CPU seconds per 1,000 proxied requests with tracing off,
# at 1% sampling and at 100%, each on a fresh proxy (HTTP/1.1 through the outbound listener,
# keep-alive, h2load as the client, nginx as the upstream). Spans go over OTLP/HTTP to a
# receiver that accepts and discards them, so the figure is the proxy's side alone: making
# the span, queueing it, batching, encoding and sending. CPU time is read from
# /proc/PID/stat (user + system) around the measured run, after a warm-up.
#
# Writes bench/results/trace-cost.md and prints it. Defaults: target/release/trellis-proxy
# (built if missing), REQUESTS=40000, CONNS=8. Needs h2load (nghttp2-client), nginx, curl
# and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
script=trace-cost.sh
source bench/lib/common.sh
need "nghttp2-client nginx curl python3" h2load nginx curl python3
bin=$(proxy_bin "${1:-}")
requests=${REQUESTS:-40000}
conns=${CONNS:-8}
mkdir -p bench/results
out=bench/results/trace-cost.md

read -r up sink < <(free_ports 2)

# The upstream: nginx answering 200 from memory.
cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir;
  server { listen 127.0.0.1:$up; keepalive_requests 1000000; location / { return 200 "ok\n"; } }
}
EOF
nginx -c "$dir/nginx.conf" &
pids+=($!)

# The span receiver: OTLP/HTTP, accepts and discards.
python3 bench/lib/otlp_sink.py "$sink" &
pids+=($!)
until curl -fsS -o /dev/null "http://127.0.0.1:$up/" 2>/dev/null; do sleep 0.1; done

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -fsS "http://127.0.0.1:$2/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# measure MODE: prints "cpu_seconds exported dropped" for $requests requests.
measure() {
  local mode=$1
  read -r out in admin < <(free_ports 3)
  {
    if [ "$mode" != off ]; then
      printf 'apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n'
      printf 'spec:\n  tracing: {collector: {address: "127.0.0.1:%s", protocol: HTTP}, samplingPercentage: %s}\n---\n' "$sink" "$mode"
    fi
    printf 'apiVersion: v1\nkind: Service\nmetadata: {name: billing, namespace: rides}\n'
    printf 'spec:\n  selector: {app: billing}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\n'
    printf 'apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {name: billing-0, namespace: rides, labels: {app: billing}}\n'
    printf 'spec: {address: 127.0.0.1, ports: {http: %s}}\n' "$up"
  } >"$dir/mesh.yaml"
  cat >"$dir/bootstrap.yaml" <<EOF
workload: {name: trip-0, namespace: rides, labels: {app: trip}}
listeners: {outbound: 127.0.0.1:$out, inbound: 127.0.0.1:$in, admin: 127.0.0.1:$admin}
app: {address: 127.0.0.1, ports: {http: 9}}
meshFile: mesh.yaml
EOF
  "$bin" --bootstrap "$dir/bootstrap.yaml" >"$dir/proxy-$mode.log" 2>&1 &
  local pid=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "http://127.0.0.1:$admin/ready" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "trace-cost.sh: the proxy was not ready:" >&2; cat "$dir/proxy-$mode.log" >&2; exit 1; }
    sleep 0.1
  done
  # h2load's --h1 mode sends `:authority` as the Host header (a `host:` header is ignored).
  local load=(h2load --h1 -H ':authority: billing' -c "$conns" "http://127.0.0.1:$out/rides/42")
  "${load[@]}" -n 4000 >/dev/null
  sleep 1.5 # the warm-up's spans leave before the measured run starts
  local before after
  before=$(cpu_ticks "$pid")
  "${load[@]}" -n "$requests" >"$dir/h2load-$mode.txt"
  if ! grep -q "status codes: $requests 2xx" "$dir/h2load-$mode.txt"; then
    echo "trace-cost.sh: not every request got a 2xx with tracing $mode:" >&2
    grep -E "requests:|status codes:" "$dir/h2load-$mode.txt" >&2
    exit 1
  fi
  sleep 2 # the last batch goes out; its CPU counts
  after=$(cpu_ticks "$pid")
  local exported dropped
  exported=$(metric trellis_trace_spans_exported_total "$admin")
  dropped=$(metric trellis_trace_spans_dropped_total "$admin")
  kill -TERM "$pid"; wait "$pid" || true
  python3 -c "print(($after - $before) / $ticks, '${exported:-0}', '${dropped:-0}')"
}

read -r off_cpu _ _ < <(measure off)
read -r one_cpu one_exp one_drop < <(measure 1)
read -r all_cpu all_exp all_drop < <(measure 100)
python3 - "$requests" "$off_cpu" "$one_cpu" "$one_exp" "$one_drop" "$all_cpu" "$all_exp" "$all_drop" >"$out" <<'EOF'
import os, sys
n = int(sys.argv[1])
off, one, one_exp, one_drop, full, full_exp, full_drop = map(float, sys.argv[2:])
per_k = lambda s: s / n * 1000
print(f"Tracing cost: {n} HTTP/1.1 requests per mode, h2load to the outbound listener, nginx upstream,")
print(f"spans over OTLP/HTTP to a discarding receiver. Load average at the end: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs.")
print()
print("| tracing | proxy CPU s / 1,000 requests | vs off | spans exported (incl. warm-up) | dropped |")
print("|---|---|---|---|---|")
print(f"| off | {per_k(off):.4f} | | - | - |")
print(f"| 1% | {per_k(one):.4f} | {100 * (one / off - 1):+.1f}% | {one_exp:.0f} | {one_drop:.0f} |")
print(f"| 100% | {per_k(full):.4f} | {100 * (full / off - 1):+.1f}% | {full_exp:.0f} | {full_drop:.0f} |")
EOF
cat "$out"
