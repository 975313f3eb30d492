#!/usr/bin/env bash
# ./examples/standalone/run.sh
#
# Builds trellis-proxy, starts it standalone next to two sample billing upstreams, and shows a
# 90/10 canary split, a proxied response, the request metrics and a proxy-generated error.
# Needs: a Rust toolchain (rustup, stable), python3 and curl. Uses ports 15000, 15001, 15006,
# 19101 and 19102 on 127.0.0.1. Everything it starts is stopped when it exits.
set -euo pipefail

cd "$(dirname "$0")/../.."   # the repo root

for tool in cargo python3 curl; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed; see README.md" >&2; exit 1; }
done

for port in 15000 15001 15006 19101 19102; do
  rc=0
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" || rc=$?
  if ((rc != 7)); then   # 7: connection refused, so the port is free
    echo "run.sh: something is already listening on 127.0.0.1:$port; stop it and run again" >&2
    exit 1
  fi
done

logs=$(mktemp -d)
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# wait_for NAME URL PID: polls URL until it answers 2xx, up to 30s, or until PID exits.
wait_for() {
  local name=$1 url=$2 pid=$3 deadline=$((SECONDS + 30))
  until curl -fsS "$url" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: $name exited before it was ready; its log ($logs/$name.log):" >&2
      cat "$logs/$name.log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "run.sh: $name is not ready after 30s; its log ($logs/$name.log):" >&2
      cat "$logs/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

echo "==> building trellis-proxy (the first build takes a few minutes)"
cargo build --release -p trellis-proxy

echo "==> starting the sample upstreams billing-v1 (:19101) and billing-v2 (:19102)"
python3 examples/standalone/upstream.py 19101 billing-v1 >"$logs/billing-v1.log" 2>&1 &
pids+=($!)
wait_for billing-v1 http://127.0.0.1:19101/ "$!"
python3 examples/standalone/upstream.py 19102 billing-v2 >"$logs/billing-v2.log" 2>&1 &
pids+=($!)
wait_for billing-v2 http://127.0.0.1:19102/ "$!"

echo "==> starting trellis-proxy (outbound :15001, inbound :15006, admin :15000); log: $logs/proxy.log"
target/release/trellis-proxy --bootstrap examples/standalone/bootstrap.yaml >"$logs/proxy.log" 2>&1 &
pids+=($!)
wait_for proxy http://127.0.0.1:15000/ready "$!"
echo "    $(curl -fsS 127.0.0.1:15000/ready)"

echo
echo "==> 200 requests to billing through the outbound listener (Host: billing)"
v1=0 v2=0 other=0
for _ in $(seq 200); do
  body=$(curl -s -H 'Host: billing' http://127.0.0.1:15001/ || true)
  case "$body" in
    billing-v1) v1=$((v1 + 1)) ;;
    billing-v2) v2=$((v2 + 1)) ;;
    *) other=$((other + 1)) ;;
  esac
done
echo "    billing-v1: $v1   billing-v2: $v2   other: $other   (the HTTPRoute asks for 90/10)"

echo
echo "==> one full response: the app's x-upstream header, and x-trellis-route added by the route"
curl -si -H 'Host: billing' http://127.0.0.1:15001/

echo
echo "==> request metrics from the admin port"
curl -s 127.0.0.1:15000/metrics | grep trellis_requests_total | head || true

echo
echo "==> a Host that names no Service: the proxy answers itself, with a trellis-error header"
curl -si -H 'Host: nosuch' http://127.0.0.1:15001/

echo
echo "==> done; stopping everything this script started"
