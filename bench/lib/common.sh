# Sourced by the bench scripts that drive one proxy by hand (request-cost.sh, trace-cost.sh):
# checking tools, building the proxy, a temporary folder, free ports, and stopping everything
# started, by PID, on exit. The caller sets `script` (its name, for messages) first.

# need TOOL... -- stops with the Debian packages to install when a tool is missing.
need() {
  local packages=$1
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$script: $tool is needed (apt-get install $packages)" >&2; exit 1; }
  done
}

# proxy_bin [PATH] -- the proxy binary to measure (default target/release/trellis-proxy,
# built when missing).
proxy_bin() {
  local bin=${1:-target/release/trellis-proxy}
  if [ ! -x "$bin" ]; then
    cargo build --release -p trellis-proxy --bin trellis-proxy >&2
  fi
  echo "$bin"
}

# free_ports N -- N ports the kernel says are free (a race only with other port grabbers).
free_ports() {
  python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$1"
}

# keep_alive_gets N PORT HOST -- N GETs of the same path on one keep-alive curl connection to
# 127.0.0.1:PORT with Host HOST; stops the script unless every one answers 200.
keep_alive_gets() {
  local n=$1 port=$2 host=$3 ok
  # curl reuses one connection for every URL in the list.
  for _ in $(seq "$n"); do
    echo "url = \"http://127.0.0.1:$port/api/v1/riders/8f14e45f/trips/latest\""
    echo 'output = "/dev/null"'
  done >"$dir/urls"
  ok=$(curl -s -H "Host: $host" -K "$dir/urls" -w '%{http_code}\n' | grep -c '^200$' || true)
  [ "$ok" = "$n" ] || { echo "$script: only $ok of $n requests got 200" >&2; exit 1; }
}

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
