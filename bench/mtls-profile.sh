#!/usr/bin/env bash
# bench/mtls-profile.sh [MULTIPLEX]
#
# Where the instructions of one request go on the two-hop mTLS path: trellis-control issues
# both sidecars' certificates (STRICT mesh), curl sends HTTP/1.1 requests on one keep-alive
# connection to the client sidecar's outbound listener, the client sidecar sends them over
# mTLS to the server sidecar, which hands them to a small HTTP/1.1 upstream. Both sidecars
# run under callgrind, twice: serving SMALL and then LARGE requests. The difference between
# the runs, divided by LARGE - SMALL, is the cost of one request, whole and per function, so
# start-up (key generation, the first config) cancels out. It counts instructions, not
# seconds, so the figures repeat on a busy machine.
#
# MULTIPLEX, when given, is the sidecars' `upstream.multiplex` (true by default; a build from
# before it existed refuses the field, so leave it out there). PROXY=path measures another
# trellis-proxy binary (an older build, to compare) with the same control plane. Prints instructions per
# request for each sidecar and the functions that cost most per request (self cost, both
# sidecars together), and keeps the callgrind files in target/mtls-profile/. Needs valgrind,
# curl and python3; builds target/release/trellis-proxy and trellis-control when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
script=mtls-profile.sh
source bench/lib/common.sh
need "valgrind curl python3" valgrind curl python3 callgrind_annotate
bin=$(proxy_bin "${PROXY:-}")
control=target/release/trellis-control
[ -x "$control" ] || cargo build --release -p trellis-control --bin trellis-control >&2
multiplex=${1:-}
small=${SMALL:-200}
large=${LARGE:-1200}
keep=target/mtls-profile/$(sha256sum "$bin" | cut -c1-10)-${multiplex:-default}
mkdir -p "$keep"

read -r up grpc http c_out c_in c_admin s_out s_in s_admin < <(free_ports 9)

cat >"$dir/mesh.yaml" <<EOF
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: v1
kind: Service
metadata: {name: up, namespace: bench}
spec:
  selector: {app: up}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
"$control" --config "$dir/mesh.yaml" --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" --dashboard-addr off \
  --state-dir "$dir/state" --registration-grace 1s >"$dir/control.log" 2>&1 &
pids+=($!)
until curl -fsS -o /dev/null "http://127.0.0.1:$http/ready" 2>/dev/null; do sleep 0.1; done

python3 examples/standalone/upstream.py "$up" up >"$dir/upstream.log" 2>&1 &
pids+=($!)
until curl -fsS -o /dev/null "http://127.0.0.1:$up/" 2>/dev/null; do sleep 0.1; done

# bootstrap ROLE APP_LABEL OUT IN ADMIN: a sidecar as service account bench/ROLE.
bootstrap() {
  "$control" token create --service-account "bench/$1" --state-dir "$dir/state" >"$dir/$1.token"
  cat >"$dir/$1.yaml" <<EOF
workload: {name: $1, namespace: bench, serviceAccount: $1, labels: {app: $2}}
listeners: {outbound: 127.0.0.1:$3, inbound: 127.0.0.1:$4, admin: 127.0.0.1:$5}
app: {address: 127.0.0.1, ports: {http: $up}}
controlPlane: {address: https://127.0.0.1:$grpc, caBundle: $dir/state/ca.pem, tokenFile: $dir/$1.token}
${multiplex:+upstream: {multiplex: $multiplex\}}
EOF
}
bootstrap server-sidecar up "$s_out" "$s_in" "$s_admin"
bootstrap client-sidecar client "$c_out" "$c_in" "$c_admin"

# run N: both sidecars under callgrind, N requests; prints "client_Ir server_Ir".
run() {
  local n=$1 spids=()
  for role in server-sidecar client-sidecar; do
    valgrind --tool=callgrind --callgrind-out-file="$keep/$role-$n.out" \
      "$bin" --bootstrap "$dir/$role.yaml" --workers 1 >"$dir/$role-$n.log" 2>&1 &
    spids+=($!)
  done
  pids+=("${spids[@]}")
  local deadline=$((SECONDS + 180))
  for admin in "$s_admin" "$c_admin"; do
    until curl -fsS -o /dev/null "http://127.0.0.1:$admin/ready" 2>/dev/null; do
      ((SECONDS < deadline)) || { echo "$script: a sidecar was not ready in 180s:" >&2; tail -5 "$dir"/*-"$n".log >&2; exit 1; }
      sleep 0.5
    done
  done
  # The server sidecar's registration reaches the client a moment after both are ready.
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: up' "http://127.0.0.1:$c_out/warm")" = 200 ]; do
    ((SECONDS < deadline)) || { echo "$script: no 200 through both sidecars in 180s" >&2; exit 1; }
    sleep 0.5
  done
  keep_alive_gets "$n" "$c_out" up
  kill -TERM "${spids[@]}"
  wait "${spids[@]}" || true
  echo "$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$dir/client-sidecar-$n.log") $(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$dir/server-sidecar-$n.log")"
}

read -r ca sa < <(run "$small")
read -r cb sb < <(run "$large")
per=$((large - small))
echo "$bin${multiplex:+ (multiplex: $multiplex)}: client sidecar $(( (cb - ca) / per )) instructions per request, server sidecar $(( (sb - sa) / per ))"
echo "  (callgrind; $small requests: client $ca, server $sa; $large: client $cb, server $sb)"
python3 - "$keep" "$small" "$large" <<'EOF'
import re, subprocess, sys
keep, small, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def costs(n):
    """Self cost by function, both sidecars together: the first `file:function` table of
    callgrind_annotate's output."""
    out = {}
    for role in ("client-sidecar", "server-sidecar"):
        text = subprocess.run(["callgrind_annotate", "--threshold=100", f"{keep}/{role}-{n}.out"],
                              capture_output=True, text=True, check=True).stdout
        lines = text.splitlines()
        start = next(i for i, l in enumerate(lines) if l.rstrip().endswith("file:function")) + 2
        for line in lines[start:]:
            m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)", line)
            if not m:
                break
            fn = m.group(2).split(":", 1)[-1].strip()
            fn = re.sub(r" \[[^\]]*\]?$", "", fn)
            out[fn] = out.get(fn, 0) + int(m.group(1).replace(",", ""))
    return out

a, b = costs(small), costs(large)
per = {fn: (b.get(fn, 0) - a.get(fn, 0)) / (large - small) for fn in b}
total = sum(v for v in per.values() if v > 0)
print(f"  top functions by self cost per request (both sidecars, {total:,.0f} instructions attributed):")
for fn, v in sorted(per.items(), key=lambda kv: -kv[1])[:15]:
    print(f"  {v:10,.0f}  {100 * v / total:5.1f}%  {fn[:150]}")
EOF
