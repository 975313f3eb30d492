# Run by bench/gateway-tls.sh, which finds Envoy and builds the proxy; not run alone.
"""The cost of TLS at the gateway, Trellis and Envoy side by side: full TLS handshakes per
second on a new connection each (`openssl s_time -new`, TLS 1.3, an ECDSA P-256 leaf signed by
a test root), and what the HTTPS listener adds to a request's latency against the HTTP
listener of the same proxy (h2load, one connection, one request at a time, keep-alive, so the
handshake is paid once and the figure is the per-request cost of the record layer).

Each proxy runs alone, pinned to core 0 with one worker thread, in front of nginx serving
1 KiB; the tools run on core 1. Prints a table and writes JSON to the path given."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from bench.lib import configs
from bench.lib.procs import cpu_seconds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "10"))
REQUESTS = int(os.environ.get("REQUESTS", "20000"))
HOST = "rides.example.com"
children = []


def spawn(argv, log, core=None):
    if core is not None:
        argv = ["taskset", "-c", str(core)] + argv
    p = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    children.append(p)
    return p


def stop_all():
    for p in children:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in children:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_http(url, host, proc, what):
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited before {url} answered")
        try:
            req = urllib.request.Request(url, headers={"host": host})
            with urllib.request.urlopen(req, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what}: {url} did not answer 200 within 30 s")


def free_ports(n):
    import socket

    ss = [socket.socket() for _ in range(n)]
    for s in ss:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in ss]
    for s in ss:
        s.close()
    return ports


def certificates(d):
    """A root and a leaf for HOST, ECDSA P-256, with openssl; returns (ca, crt, key) paths."""
    ca_key, ca, key, csr, crt = (os.path.join(d, n) for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench gateway CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={HOST}")
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:{HOST}\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext)
    return ca, crt, key


def trellis_files(d, ports, up, crt, key):
    indent = lambda path: open(path).read().strip().replace("\n", "\n      ")
    with open(os.path.join(d, "mesh.yaml"), "w") as f:
        f.write(f"""apiVersion: v1
kind: Service
metadata: {{name: up, namespace: bench}}
spec: {{selector: {{app: up}}, ports: [{{name: http, port: 80, targetPort: http}}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {{name: up-0, namespace: bench, labels: {{app: up}}}}
spec: {{address: 127.0.0.1, ports: {{http: {up}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: bench}}
spec:
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: edge-cert}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: edge, namespace: bench}}
spec:
  parentRefs: [{{kind: Gateway, name: edge}}]
  rules: [{{backendRefs: [{{name: up, port: 80}}]}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-cert, namespace: bench}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
      {indent(crt)}
  tls.key: |
      {indent(key)}
""")
    boot = os.path.join(d, "bootstrap.yaml")
    with open(boot, "w") as f:
        f.write(f"""workload: {{name: edge-0, namespace: bench, serviceAccount: edge, labels: {{app: edge}}}}
listeners: {{outbound: 127.0.0.1:{ports[2]}, inbound: 127.0.0.1:{ports[3]}, admin: 127.0.0.1:{ports[4]}}}
app: {{address: 127.0.0.1}}
meshFile: mesh.yaml
gateway: {{name: edge, listen: {{http: 127.0.0.1:{ports[0]}, https: 127.0.0.1:{ports[1]}}}}}
""")
    return boot


def envoy_file(d, ports, up, crt, key):
    cfg = json.loads(configs.envoy_one_service(ports[0], ports[4], up))
    # The same route on HOST, and a second listener with TLS terminated, ALPN h2 and http/1.1.
    listener = cfg["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["domains"] = ["*"]
    tls = json.loads(json.dumps(listener))
    tls["name"] = "bench-tls"
    tls["address"]["socket_address"]["port_value"] = ports[1]
    tls["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{"certificate_chain": {"filename": crt}, "private_key": {"filename": key}}],
            },
        },
    }
    cfg["static_resources"]["listeners"].append(tls)
    # nginx speaks HTTP/1.1 only: HTTP/1.1 upstream whatever the client spoke, as Trellis
    # does for a port without appProtocol http2.
    opts = cfg["static_resources"]["clusters"][0]["typed_extension_protocol_options"]
    opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].pop("use_downstream_protocol_config")
    opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"] = {"http_protocol_options": {}}
    path = os.path.join(d, "envoy.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


S_TIME = re.compile(r"(\d+) connections in ([\d.]+) real seconds")


def handshakes(port, ca, proc):
    """Full TLS 1.3 handshakes per second (a new connection each, no resumption), and the
    proxy's CPU per handshake."""
    before = cpu_seconds(proc.pid)
    out = subprocess.run(["taskset", "-c", "1", "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
                          "-time", str(SECONDS), "-CAfile", ca, "-verify", "1"],
                         capture_output=True, text=True, timeout=SECONDS + 30).stdout
    cpu = cpu_seconds(proc.pid) - before
    m = S_TIME.search(out)
    if not m:
        raise RuntimeError(f"s_time printed no count:\n{out[-800:]}")
    n, secs = int(m.group(1)), float(m.group(2))
    return {"per_s": round(n / secs), "connections": n, "proxy_cpu_us_per_handshake": round(1e6 * cpu / n, 1)}


def latency(url, h1):
    """One connection, one request at a time: each request's time from h2load's log."""
    log = os.path.join(os.environ["BENCH_DIR"], "h2load.log")
    argv = ["taskset", "-c", "1", "h2load", "-n", str(REQUESTS), "-c", "1", "-m", "1", "--log-file", log,
            "-H", f":authority: {HOST}", url]
    if h1:
        argv.insert(4, "--h1")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
    if f"{REQUESTS} succeeded" not in out or f"{REQUESTS} 2xx" not in out:
        one = subprocess.run(["curl", "-sk", "-i", "-H", f"host: {HOST}", url], capture_output=True, text=True).stdout
        raise RuntimeError(f"h2load {url}: not every request succeeded:\n{out[-1500:]}\none request with curl:\n{one[:800]}")
    times = sorted(int(line.split()[2]) for line in open(log) if line.strip())
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    return {"p50_us": pick(0.50), "p99_us": pick(0.99), "mean_us": round(sum(times) / len(times))}


def measure(name, proc, ports, ca):
    http = f"http://127.0.0.1:{ports[0]}/payload"
    https = f"https://127.0.0.1:{ports[1]}/payload"
    latency(http, True)  # warm both paths
    out = {
        "handshakes": handshakes(ports[1], ca, proc),
        "latency": {
            "http_h1": latency(http, True),
            "https_h1": latency(https, True),
            "https_h2": latency(https, False),
        },
    }
    print(f"{name}: {out}", file=sys.stderr)
    return out


def main():
    out_path = sys.argv[1]
    d = os.environ["BENCH_DIR"]
    trellis, envoy = os.environ["BENCH_TRELLIS"], os.environ.get("BENCH_ENVOY", "")
    ca, crt, key = certificates(d)
    up = free_ports(1)[0]
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    # nginx's worker runs as another user when the bench runs as root: let it read the file.
    os.chmod(d, 0o755)
    with open(os.path.join(www, "payload"), "wb") as f:
        f.write(b"x" * configs.PAYLOAD_BYTES)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(configs.nginx_conf(d, up))
    nginx = spawn(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf")], os.path.join(d, "nginx.log"), core=1)
    wait_http(f"http://127.0.0.1:{up}/payload", HOST, nginx, "nginx")
    results = {"load_before": open("/proc/loadavg").read().split()[:3], "seconds_per_handshake_run": SECONDS,
               "requests_per_latency_run": REQUESTS}
    ports = free_ports(5)
    boot = trellis_files(d, ports, up, crt, key)
    p = spawn([trellis, "--bootstrap", boot, "--workers", "1"], os.path.join(d, "trellis.log"), core=0)
    wait_http(f"http://127.0.0.1:{ports[0]}/payload", HOST, p, "trellis-proxy")
    results["trellis"] = measure("trellis", p, ports, ca)
    p.send_signal(signal.SIGTERM)
    p.wait(10)
    if envoy:
        ports = free_ports(5)
        cfg = envoy_file(d, ports, up, crt, key)
        e = spawn([envoy, "-c", cfg, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
                  os.path.join(d, "envoy.log"), core=0)
        wait_http(f"http://127.0.0.1:{ports[0]}/payload", HOST, e, "envoy")
        results["envoy"] = measure("envoy", e, ports, ca)
        results["envoy_version"] = subprocess.run([envoy, "--version"], capture_output=True, text=True).stdout.strip()
    results["load_after"] = open("/proc/loadavg").read().split()[:3]
    results["openssl"] = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)
    print("| | handshakes/s | proxy CPU per handshake | HTTP h1 p50 / p99 | HTTPS h1 p50 / p99 | HTTPS h2 p50 / p99 |")
    print("|---|---|---|---|---|---|")
    for name in ("trellis", "envoy"):
        if name not in results:
            continue
        r = results[name]
        lat = r["latency"]
        cell = lambda k: f"{lat[k]['p50_us']} / {lat[k]['p99_us']} µs"
        print(f"| {name} | {r['handshakes']['per_s']} | {r['handshakes']['proxy_cpu_us_per_handshake']} µs | "
              f"{cell('http_h1')} | {cell('https_h1')} | {cell('https_h2')} |")
    print(f"load average before {' '.join(results['load_before'])}, after {' '.join(results['load_after'])}")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
