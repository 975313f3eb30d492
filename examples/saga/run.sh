#!/usr/bin/env bash
# ./examples/saga/run.sh
#
# An order/inventory saga over ActiveMQ, carried by the Trellis mesh under STRICT mTLS.
# Builds trellis-control and trellis-proxy, starts ActiveMQ, the control plane, a sidecar
# for each workload (activemq, order, inventory, notifier, and an outsider that the
# AuthorizationPolicy does not allow), and the three services, which talk STOMP to the
# broker through their sidecars. It waits for every order to end, shows that a workload
# the policy leaves out and a plaintext client are both refused, prints a summary, and
# exits 1 if the numbers do not add up. See README.md in this folder.
#
# Needs: a Rust toolchain (rustup, stable), Java and ActiveMQ (Debian: apt-get install
# activemq), python3 with venv (Debian: apt-get install python3-venv) and curl. The first run
# installs stomp.py from PyPI into a venv. Uses ports 17010, 17014, 17613 and 17x00, 17x01,
# 17x06, 17x61 for x in 1, 2, 3, 4, 9 on 127.0.0.1. Everything it starts is stopped when it exits.
#
# Environment:
#   TRELLIS_BIN_DIR=DIR  take trellis-control and trellis-proxy from DIR instead of building
#   SAGA_VENV=DIR        the Python venv that holds stomp.py (default: target/saga-venv)
#   SAGA_ORDERS=N        how many orders to place (default: 20; the stock is 30 widgets)
#   SAGA_KEEP=1          keep the temp folder with every log after a run that succeeded too
set -euo pipefail

cd "$(dirname "$0")/../.."   # the repo root
here=examples/saga
orders=${SAGA_ORDERS:-20}
venv=${SAGA_VENV:-target/saga-venv}
bin=${TRELLIS_BIN_DIR:-target/release}
activemq_jar=/usr/share/activemq/bin/activemq.jar

missing() { echo "run.sh: $1 is not installed; $2" >&2; exit 1; }
if [[ -z ${TRELLIS_BIN_DIR:-} ]]; then
  command -v cargo >/dev/null || missing cargo "install Rust with rustup (https://rustup.rs)"
fi
command -v java >/dev/null || missing java "on Debian or Ubuntu: sudo apt-get install activemq (it brings Java)"
[[ -f $activemq_jar ]] || missing "ActiveMQ ($activemq_jar)" "on Debian or Ubuntu: sudo apt-get install activemq"
command -v curl >/dev/null || missing curl "on Debian or Ubuntu: sudo apt-get install curl"
command -v python3 >/dev/null || missing python3 "on Debian or Ubuntu: sudo apt-get install python3 python3-venv"
if [[ ! -x $venv/bin/python ]]; then
  python3 -c 'import venv, ensurepip' 2>/dev/null ||
    missing "python3's venv module" "on Debian or Ubuntu: sudo apt-get install python3-venv"
fi

ports=(17010 17014 17613)
for x in 1 2 3 4 9; do ports+=("17${x}00" "17${x}01" "17${x}06" "17${x}61"); done
for port in "${ports[@]}"; do
  rc=0
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" || rc=$?
  if ((rc != 7)); then   # 7: connection refused, so the port is free
    echo "run.sh: something is already listening on 127.0.0.1:$port; stop it and run again" >&2
    exit 1
  fi
done

export NO_COLOR=1                  # plain log files: the binaries colour their logs unless told not to
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the source tree
work=$(mktemp -d)   # logs, the services' state, the control plane's CA, tokens, bootstraps
pids=()             # everything started, in order
declare -A sidecar  # workload name -> its trellis-proxy's pid
cleanup() {
  local rc=$?
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do   # the services first, ActiveMQ last
    kill "${pids[i]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if ((rc == 0)) && [[ -z ${SAGA_KEEP:-} ]]; then
    rm -rf "$work"
  else
    echo "run.sh: the logs are in $work" >&2
  fi
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

# fail NAME MESSAGE: says what went wrong, shows NAME's log, and exits 1.
fail() {
  echo "run.sh: $1 $2; its log ($work/$1.log):" >&2
  tail -n 40 "$work/$1.log" >&2
  if [[ $1 == saga ]] && grep -q WARN "$work/activemq-proxy.log"; then
    echo "run.sh: the broker's sidecar warned ($work/activemq-proxy.log):" >&2
    grep WARN "$work/activemq-proxy.log" | tail -n 4 >&2
  fi
  exit 1
}

# wait_until NAME PID COMMAND...: runs COMMAND until it succeeds, up to 30s, or until PID exits.
wait_until() {
  local name=$1 pid=$2 deadline=$((SECONDS + 30))
  shift 2
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "$name" "exited before it was ready"
    ((SECONDS < deadline)) || fail "$name" "is not ready after 30s"
    sleep 0.2
  done
}
listening() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
# has_broker ADMIN_PORT: the sidecar's config lists the broker's sidecar as an endpoint.
has_broker() { [[ $(curl -fsS "http://127.0.0.1:$1/clusters") == *'"saga/activemq-0"'* ]]; }

if [[ -z ${TRELLIS_BIN_DIR:-} ]]; then
  echo "==> building trellis-control and trellis-proxy (the first build takes a few minutes)"
  cargo build --release -p trellis-proxy -p trellis-control
fi

if ! "$venv/bin/python" -c 'import stomp' 2>/dev/null; then
  echo "==> creating the Python venv $venv and installing stomp.py into it"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'stomp.py==9.0.0'
fi
py=$venv/bin/python

echo "==> starting ActiveMQ, STOMP on 127.0.0.1:17613"
java -Xmx256M -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$work" -Dactivemq.conf="$work" \
  -Dactivemq.data="$work/activemq-data" \
  -jar "$activemq_jar" start "xbean:file:$PWD/$here/activemq.xml" >"$work/activemq.log" 2>&1 &
pids+=($!)
wait_until activemq "$!" listening 17613

echo "==> starting trellis-control (gRPC :17010, HTTP :17014) with $here/mesh.yaml"
"$bin/trellis-control" --config "$here/mesh.yaml" --grpc-addr 127.0.0.1:17010 --http-addr 127.0.0.1:17014 \
  --state-dir "$work/control" --registration-grace 1s >"$work/control.log" 2>&1 &
pids+=($!)
wait_until control "$!" curl -fsS http://127.0.0.1:17014/ready
cp "$work/control/ca.pem" "$work/ca.pem"

# The five workloads: name and admin port. Each gets a join token for its own service
# account, saga/<name>, and a sidecar whose bootstrap is proxies/<name>.yaml.
workloads=(activemq:17100 order:17200 inventory:17300 notifier:17400 outsider:17900)
echo "==> starting a sidecar for each workload, each with a join token for its service account"
for w in "${workloads[@]}"; do
  name=${w%%:*}
  "$bin/trellis-control" token create --state-dir "$work/control" --service-account "saga/$name" --ttl 1h \
    >"$work/$name.token"
  cp "$here/proxies/$name.yaml" "$work/$name.yaml"
  "$bin/trellis-proxy" --bootstrap "$work/$name.yaml" >"$work/$name-proxy.log" 2>&1 &
  pids+=($!)
  sidecar[$name]=$!
done
for w in "${workloads[@]}"; do
  name=${w%%:*} admin=${w##*:}
  # /ready turns 200 once the sidecar has its config and its mesh certificate...
  wait_until "$name-proxy" "${sidecar[$name]}" curl -fsS "http://127.0.0.1:$admin/ready"
  # ...and then the broker's sidecar must be an endpoint of the activemq Service in its config.
  wait_until "$name-proxy" "${sidecar[$name]}" has_broker "$admin"
  id=$(curl -fsS "http://127.0.0.1:$admin/config_dump" | python3 -c 'import json,sys; print(json.load(sys.stdin)["identity"]["spiffeId"])')
  printf '    %-9s admin :%s  %s\n' "$name" "$admin" "$id"
done

echo "==> starting the notifier and the inventory (30 widgets in stock)"
"$py" "$here/notifier.py" --port 17461 --expect "$orders" --state "$work/notifier.json" >>"$work/saga.log" 2>&1 &
pids+=($!)
notifier=$!
wait_until saga "$notifier" test -f "$work/notifier.json"   # subscribed to the topic
"$py" "$here/inventory.py" --port 17361 --stock 30 --state "$work/inventory.json" >>"$work/saga.log" 2>&1 &
pids+=($!)
inventory=$!
wait_until saga "$inventory" test -f "$work/inventory.json"   # consuming its queue

echo "==> placing $orders orders; waiting for every one of them to end"
started=$SECONDS
"$py" "$here/order.py" --port 17261 --orders "$orders" --state "$work/order.json" >>"$work/saga.log" 2>&1 &
pids+=($!)
rc=0
wait "$!" || rc=$?
((rc == 0)) || fail saga "the order service failed (exit status $rc)"
rc=0
wait "$notifier" || rc=$?
((rc == 0)) || fail saga "the notifier did not see every outcome (exit status $rc)"
kill "$inventory" 2>/dev/null || true
wait "$inventory" || true
echo "    done in $((SECONDS - started))s"

echo
echo "==> callers the mesh must turn away from the broker"
"$py" "$here/outsider.py" --via 17961 --direct 17106 || { echo "run.sh: the mesh let a caller through" >&2; exit 1; }

echo
"$py" "$here/summary.py" --dir "$work" --orders "$orders" --broker-admin 127.0.0.1:17100

echo
echo "==> done; stopping everything this script started"
