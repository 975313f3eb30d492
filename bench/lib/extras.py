# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""The parts of a run besides the arms: the machine and tools, the upstream, RSS per
endpoint configured, and the control plane's propagation (bench/propagation.sh)."""

import json
import os
import platform
import socket
import subprocess
import time

from . import arms as armsmod
from . import configs, load
from .procs import free_port, rss_mib, wait_http

UPSTREAM_CORE = 1
ENDPOINT_COUNTS = (1000, 10000)


def describe(t, mode, args, repo):
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])

    def version(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    commit = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "sidecar", "config"], capture_output=True, text=True).stdout.strip())
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "arms": args.arms,
        "protocols": list(armsmod.PROTOCOLS),
        "runs": mode["runs"],
        "rates": mode["rates"],
        "seconds": {"saturation": mode["saturation_s"], "warmup": mode["warmup_s"], "fixed_rate": mode["rate_s"]},
        "load": {
            "tool": "h2load",
            "saturation": load.SATURATION,
            "fixed_rate": load.FIXED_RATE,
            "latency_correction": "HdrHistogram-style: expected interval = streams per connection / per-connection rate",
        },
        "payload_bytes": configs.PAYLOAD_BYTES,
        "pinning": {"proxies": armsmod.PROXY_CORE, "load_tool_and_upstream": UPSTREAM_CORE},
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(),
            "loadavg_at_start": os.getloadavg(),
        },
        "versions": {
            "trellis": f"{commit}{' (modified)' if dirty else ''}",
            "envoy": _envoy_version(version([t["envoy"], "--version"])) if t["envoy"] else None,
            "h2load": version(["h2load", "--version"]),
            "nginx": version([t["nginx"], "-v"]),
            "nghttpd": version([t["nghttpd"], "--version"]),
        },
    }


def _envoy_version(line):
    # "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL" -> "envoy 1.40.0 (<sha>, BoringSSL)"
    if not line or "version:" not in line:
        return line
    parts = line.split("version:", 1)[1].strip().split("/")
    return f"envoy {parts[1]} ({parts[0][:12]}, {parts[-1]})" if len(parts) >= 3 else line


def start_upstream(t, root, children):
    """The upstream, one process per protocol on the load tool's core, each with one worker:
    nginx for HTTP/1.1 and nghttpd (nghttp2's server) for h2c. nghttpd was chosen while
    Trellis still sent a `host` differing from `:authority` over HTTP/2 (RFC 9113 §8.3.1),
    which nginx refuses; it stays so runs remain comparable. Every arm of a protocol uses
    the same upstream."""
    www = os.path.join(root, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, configs.PATH.lstrip("/")), "wb") as f:
        f.write(b"x" * configs.PAYLOAD_BYTES)
    ports = {"h1": free_port(), "h2": free_port()}
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(configs.nginx_conf(root, ports["h1"]))
    proc = children.start("nginx", [t["nginx"], "-p", root, "-c", conf], UPSTREAM_CORE, os.path.join(root, "nginx.log"))
    wait_http(f"http://127.0.0.1:{ports['h1']}{configs.PATH}", 10, proc)
    h2 = children.start(
        "nghttpd",
        [t["nghttpd"], "--no-tls", "-d", www, "-m", "1024", "--address=127.0.0.1", str(ports["h2"])],
        UPSTREAM_CORE,
        os.path.join(root, "nghttpd.log"),
    )
    wait_port(ports["h2"], 10, h2)
    return ports


def wait_port(port, deadline_s, proc):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with status {proc.returncode}; see its log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.bench_name} did not listen on port {port} within {deadline_s}s")


def endpoint_rss(args, t, scratch, children, log):
    """RSS of an idle proxy configured with 1,000 and 10,000 endpoints (10 per Service)."""
    out = {}
    kinds = []
    if any(a.startswith("trellis") for a in args.arms):
        kinds.append("trellis")
    if any(a.startswith("envoy") for a in args.arms):
        kinds.append("envoy")
    for kind in kinds:
        res = {}
        for n in ENDPOINT_COUNTS:
            d = os.path.join(scratch, f"endpoints-{kind}-{n}")
            os.makedirs(d, exist_ok=True)
            admin = free_port()
            if kind == "trellis":
                with open(os.path.join(d, "mesh.yaml"), "w") as f:
                    f.write(configs.trellis_mesh_endpoints(n))
                ports = {"outbound": free_port(), "inbound": free_port(), "admin": admin}
                boot = os.path.join(d, "bootstrap.yaml")
                with open(boot, "w") as f:
                    f.write(configs.trellis_bootstrap("endpoints", ports, 1))
                argv = [t["trellis"], "--bootstrap", boot, "--workers", "1"]
            else:
                cfg = os.path.join(d, "envoy.json")
                with open(cfg, "w") as f:
                    f.write(configs.envoy_endpoints(free_port(), admin, n))
                argv = armsmod.envoy_argv(t, cfg)
            start = time.monotonic()
            proc = children.start(f"{kind} ({n} endpoints)", argv, armsmod.PROXY_CORE, os.path.join(d, "proxy.log"))
            wait_http(f"http://127.0.0.1:{admin}/ready", 120, proc)
            ready_s = time.monotonic() - start
            time.sleep(1.0)  # let start-up work (config compile, first stats flush) settle
            res[str(n)] = {"rss_mib": rss_mib(proc.pid), "ready_s": ready_s}
            children.stop(proc)
            log(f"{kind} with {n} endpoints: RSS {res[str(n)]['rss_mib']:.1f} MiB, ready in {ready_s:.2f}s")
        lo, hi = ENDPOINT_COUNTS
        res["per_1000_mib"] = (res[str(hi)]["rss_mib"] - res[str(lo)]["rss_mib"]) / ((hi - lo) / 1000)
        out[kind] = res
    return out


def propagation(repo, log):
    """Runs bench/propagation.sh --quick (1,000 simulated proxies) and reads its results file."""
    log("control-plane propagation (bench/propagation.sh --quick), about three minutes")
    r = subprocess.run(["bash", os.path.join(repo, "bench", "propagation.sh"), "--quick"],
                       capture_output=True, text=True, cwd=repo, timeout=1800)
    text = r.stdout
    if r.returncode != 0:
        return {"error": f"bench/propagation.sh exited {r.returncode}", "output": (r.stdout + r.stderr)[-2000:]}
    path = os.path.join(repo, "bench", "results", "propagation.json")
    runs = [json.loads(line) for line in open(path) if line.strip()]
    for run in runs:
        rw = run.get("rewrites", {})
        log(f"propagation at {run['proxies']} proxies: p50 {rw.get('p50_ms')} ms, p99 {rw.get('p99_ms')} ms, "
            f"RSS peak {rw.get('peak_rss_mib')} MiB")
    return {"runs": runs, "output": text}
