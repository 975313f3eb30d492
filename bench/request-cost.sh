#!/usr/bin/env bash
# bench/request-cost.sh [PROXY_BINARY]
#
# Instructions that trellis-proxy spends on one proxied HTTP/1.1 request (outbound listener,
# keep-alive on both sides, a 90/10 route, standalone mesh file), counted by callgrind. It
# counts instructions, not seconds, so the figure repeats whatever else the machine does, and
# two builds (before and after a change) can be compared on a busy machine.
#
# The proxy runs twice under callgrind, serving SMALL and then LARGE requests from one curl
# connection; start-up and shutdown cancel out of the difference, which is divided by
# LARGE - SMALL. Defaults: target/release/trellis-proxy (built if missing), SMALL=200,
# LARGE=1200. TRACING=PERCENT adds a span collector (a discarding OTLP/HTTP receiver,
# bench/lib/otlp_sink.py) and samples that percentage of requests; the export task's
# instructions count too. Needs valgrind, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
script=request-cost.sh
source bench/lib/common.sh
need "valgrind curl python3" valgrind curl python3
bin=$(proxy_bin "${1:-}")
small=${SMALL:-200}
large=${LARGE:-1200}

read -r up out in admin sink < <(free_ports 5)

sed "s/19101/$up/; s/19102/$up/" examples/standalone/mesh.yaml >"$dir/mesh.yaml"
if [ -n "${TRACING:-}" ]; then
  python3 bench/lib/otlp_sink.py "$sink" &
  pids+=($!)
  printf -- '---\napiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  tracing: {collector: {address: "127.0.0.1:%s", protocol: HTTP}, samplingPercentage: %s}\n' \
    "$sink" "$TRACING" >>"$dir/mesh.yaml"
fi
cat >"$dir/bootstrap.yaml" <<EOF
workload: {name: trip-0, namespace: rides, serviceAccount: trip, labels: {app: trip, version: v1}}
listeners: {outbound: 127.0.0.1:$out, inbound: 127.0.0.1:$in, admin: 127.0.0.1:$admin}
app: {address: 127.0.0.1, ports: {http: 9}}
meshFile: mesh.yaml
EOF

python3 examples/standalone/upstream.py "$up" billing >"$dir/upstream.log" 2>&1 &
pids+=($!)
until curl -fsS -o /dev/null "http://127.0.0.1:$up/" 2>/dev/null; do sleep 0.1; done

# run N: prints the instructions callgrind collected over the proxy's whole life, N requests.
run() {
  local n=$1 log="$dir/callgrind-$1.log"
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --bootstrap "$dir/bootstrap.yaml" \
    >"$log" 2>&1 &
  local pid=$!
  local deadline=$((SECONDS + 120))
  until curl -fsS -o /dev/null "http://127.0.0.1:$admin/ready" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "request-cost.sh: the proxy was not ready in 120s:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.2
  done
  keep_alive_gets "$n" "$out" billing
  # The last batch of spans goes out before the proxy stops, so its cost is counted.
  [ -z "${TRACING:-}" ] || sleep 1.5
  kill -TERM "$pid"
  wait "$pid" || true
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log"
}

a=$(run "$small")
b=$(run "$large")
echo "$bin${TRACING:+ (tracing at ${TRACING}%)}: $(( (b - a) / (large - small) )) instructions per proxied request (callgrind; $small requests: $a, $large: $b)"
