# Used by bench/run (run: bench/run [--quick] [--arms ...]); not run alone.
"""A fresh client connection for every request, through two sidecars over mTLS: `ab` without
keep-alive (so HTTP/1.0, one request per connection), 32 at once, on the load core. The
figures are requests per second, both sidecars' CPU per 1,000 requests, and, for a Trellis
client sidecar, the upstream connections it opened meanwhile (each `mtls` one a handshake)."""

import re
import subprocess

from . import configs
from .procs import cpu_seconds

# The arms it runs on, on their HTTP/1.1 side (ab speaks only HTTP/1.x).
NEWCONN_ARMS = ("trellis-2hop-mtls", "envoy-2hop-mtls", "trellis-2hop-mtls-nomux")
CONCURRENCY = 32


def opened(admin_port):
    """The client sidecar's `trellis_upstream_connections_opened_total`, by `protocol/tls`."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^trellis_upstream_connections_opened_total\{([^}]*)\} (\d+)', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[f"{labels.get('protocol')}/{labels.get('tls')}"] = int(m.group(2))
    return out


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def measure(arm, seconds):
    for p in arm.proxies:
        if p["proc"].poll() is not None:
            raise RuntimeError(f"{arm.key} {p['role']} exited with status {p['proc'].returncode}; see its log")
    before_cpu = [cpu_seconds(p["pid"]) for p in arm.proxies]
    before_conns = opened(arm.client_admin) if arm.client_admin else None
    argv = [
        "taskset", "-c", "1", "ab", "-q", "-r", "-c", str(CONCURRENCY), "-t", str(seconds), "-n", "100000000",
        "-H", f"Host: {configs.SERVICE}", arm.url,
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = res.stdout + res.stderr
    after_cpu = [cpu_seconds(p["pid"]) for p in arm.proxies]

    def num(pattern):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None

    done = num(r"Complete requests:\s+(\d+)")
    if done is None:
        raise RuntimeError(f"{arm.key}: cannot read ab's output:\n{out[-2000:]}")
    r = {
        "requests": int(done),
        "failed": int(num(r"Failed requests:\s+(\d+)") or 0),
        "non_2xx": int(num(r"Non-2xx responses:\s+(\d+)") or 0),
        "seconds": num(r"Time taken for tests:\s+([\d.]+)"),
        "rps": num(r"Requests per second:\s+([\d.]+)"),
    }
    r["proxies"] = [
        {"role": p["role"], "cpu_s_per_1k": (a - b) / (done / 1000) if done else None}
        for p, b, a in zip(arm.proxies, before_cpu, after_cpu)
    ]
    r["cpu_s_per_1k"] = sum(p["cpu_s_per_1k"] or 0 for p in r["proxies"]) if done else None
    if before_conns is not None:
        r["connections_opened"] = delta(before_conns, opened(arm.client_admin))
    return r
