"""bench/banner.py PROXY N OUT: the banner first-byte bench that bench/banner.sh runs.

In a fresh network namespace: a banner server on 127.0.0.3:7000 that greets each
connection at once, a Service `banner` whose clusterIP 127.100.0.11:7000 selects it (no
appProtocol, a port on no opaque list), and trellis-proxy with `init`'s iptables rules,
running as UID 1337. An app connects N times to the clusterIP and times connect -> first
byte. Each arm runs its own proxy; the namespace is deleted at the end.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PROXY, N, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]
NS = f"trellis-banner-{os.getpid()}"

MESH = """apiVersion: v1
kind: Service
metadata: {name: banner, namespace: rides}
spec: {clusterIP: 127.100.0.11, selector: {app: banner}, ports: [{name: greet, port: 7000}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: banner-0, namespace: rides, labels: {app: banner}}
spec: {address: 127.0.0.3}
"""

SERVER = r"""
import socket, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.3", 7000)); l.listen(512)
def greet(c):
    try:
        c.sendall(b"220 banner ready\r\n"); c.recv(100)
    finally:
        c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=greet, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import json, socket, sys, time
n = int(sys.argv[1]); out = []
for _ in range(n):
    t = time.monotonic()
    s = socket.create_connection(("127.100.0.11", 7000), timeout=10)
    d = s.recv(100)
    out.append((time.monotonic() - t) * 1000)
    assert d.startswith(b"220"), d
    s.close()
print(json.dumps(out))
"""


WAIT_READY = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:15000/ready')"
WAIT_GREETING = "import socket; socket.create_connection(('127.0.0.3', 7000), timeout=1).recv(3)"


def wait_until(what, probe, seconds=10):
    """Runs `probe` (Python) in the namespace until it succeeds, for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while subprocess.run(["ip", "netns", "exec", NS, "python3", "-c", probe],
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} is not ready after {seconds}s")
        time.sleep(0.05)


def ns(*args, **kw):
    return subprocess.run(["ip", "netns", "exec", NS, *args], check=True, **kw)


def arm(name, detection, tmp):
    boot = os.path.join(tmp, f"{name}.yaml")
    with open(boot, "w") as f:
        f.write(
            "workload: {name: trip-0, namespace: rides, labels: {app: trip}}\n"
            "listeners: {outbound: 127.0.0.1:15001, inbound: 127.0.0.1:15006, admin: 127.0.0.1:15000}\n"
            "app: {address: 127.0.0.1, ports: {http: 9000}}\nmeshFile: mesh.yaml\n"
            f"protocolDetection: {detection}\n"
        )
    proxy = subprocess.Popen(
        ["ip", "netns", "exec", NS, "setpriv", "--reuid", "1337", "--regid", "1337",
         "--clear-groups", os.path.join(tmp, "trellis-proxy"), "--bootstrap", boot],
        stderr=open(os.path.join(tmp, f"{name}.log"), "w"),
    )
    try:
        wait_until(f"{name}: the proxy", WAIT_READY)
        ns("python3", "-c", CLIENT, "5", capture_output=True)  # warm up
        out = ns("python3", "-c", CLIENT, str(N), capture_output=True, text=True).stdout
        ms = sorted(json.loads(out))
        return {
            "arm": name,
            "protocolDetection": detection,
            "n": N,
            "p50_ms": round(statistics.median(ms), 3),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
            "max_ms": round(ms[-1], 3),
        }
    finally:
        proxy.terminate()
        proxy.wait()


def main():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    tmp = tempfile.mkdtemp()
    os.chmod(tmp, 0o755)
    server = None
    try:
        ns("ip", "link", "set", "lo", "up")
        shutil.copy(PROXY, os.path.join(tmp, "trellis-proxy"))
        with open(os.path.join(tmp, "mesh.yaml"), "w") as f:
            f.write(MESH)
        # The server first: once `init` has installed its rules, the probe would be redirected.
        server = subprocess.Popen(["ip", "netns", "exec", NS, "python3", "-c", SERVER])
        wait_until("the banner server", WAIT_GREETING)
        ns(os.path.join(tmp, "trellis-proxy"), "init", capture_output=True)
        load = os.getloadavg()
        results = [
            arm("earlyConnect on (default 2ms)", "{timeout: 200ms}", tmp),
            arm("earlyConnect off (at the timeout)", "{timeout: 200ms, earlyConnect: 200ms}", tmp),
        ]
        report = {"load_before": [round(x, 2) for x in load], "nproc": os.cpu_count(), "arms": results}
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "w") as f:
            json.dump(report, f, indent=2)
        print(f"machine load {report['load_before']} on {report['nproc']} cores")
        for r in results:
            print(f"{r['arm']:38} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  max {r['max_ms']:8.2f} ms  (n={r['n']})")
    finally:
        if server:
            server.kill()
        subprocess.run(["ip", "netns", "del", NS])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
