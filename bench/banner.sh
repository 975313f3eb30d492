#!/usr/bin/env bash
# bench/banner.sh — how long a server-speaks-first protocol (NATS's INFO, an SMTP greeting)
# waits for its first byte through an intercepting sidecar, on a port nobody declared: the
# app in a network namespace connects to a Service's clusterIP, iptables redirects it to
# trellis-proxy, and the proxy must not hold the banner back while it waits for the client's
# first bytes. Two arms: earlyConnect on (the default, 2ms) and off (earlyConnect at the
# detection timeout, which is how every release before it behaved). Needs root, iptables and
# python3; writes bench/results/banner.json. Run from anywhere: bench/banner.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/banner.sh needs root (a network namespace and iptables)" >&2; exit 1; }
command -v iptables >/dev/null || { echo "iptables is needed: apt-get install iptables" >&2; exit 1; }
cargo build --release -p trellis-proxy
python3 bench/banner.py target/release/trellis-proxy "${N:-200}" bench/results/banner.json
