# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""The arms: how each one's proxies are configured and started, and where the load goes."""

import os
import subprocess

from . import configs
from .procs import free_port, rss_mib, wait_http

ARMS = ("direct", "trellis", "envoy", "trellis-2hop", "envoy-2hop")
PROTOCOLS = ("h1", "h2")
PROXY_CORE = 0

# What each arm's `proxies` are called in results.json, in the order a request meets them.
ROLES = {
    "direct": [],
    "trellis": ["sidecar"],
    "envoy": ["sidecar"],
    "trellis-2hop": ["client-sidecar", "server-sidecar"],
    "envoy-2hop": ["client-sidecar", "server-sidecar"],
}


class Arm:
    """One arm for one protocol: its proxy processes and the URL and Host the load uses."""

    def __init__(self, name, proto):
        self.name, self.proto = name, proto
        self.url = None
        self.host = configs.SERVICE
        self.proxies = []  # dicts: role, proc, pid, idle_rss_mib

    @property
    def key(self):
        return f"{self.name}/{self.proto}"


def start_arm(name, proto, tools, upstream_ports, work, children):
    """Starts the arm's proxies (pinned to PROXY_CORE, one worker each), waits until they are
    ready and a request through them succeeds, and records each one's idle RSS."""
    arm = Arm(name, proto)
    app_port = upstream_ports[proto]
    wdir = os.path.join(work, f"{name}-{proto}")
    os.makedirs(wdir, exist_ok=True)
    if name == "direct":
        arm.url = f"http://127.0.0.1:{app_port}{configs.PATH}"
    elif name == "trellis":
        p = _start_trellis(arm, "sidecar", tools, wdir, target_port=app_port, app_port=app_port, children=children)
        arm.url = f"http://127.0.0.1:{p['outbound']}{configs.PATH}"
    elif name == "trellis-2hop":
        # The server sidecar's inbound delivers to the app; the client sidecar's outbound
        # sends Service `up` to that inbound, as the control plane would point it.
        b = _start_trellis(arm, "server-sidecar", tools, wdir, target_port=app_port, app_port=app_port, children=children)
        a = _start_trellis(arm, "client-sidecar", tools, wdir, target_port=b["inbound"], app_port=app_port, children=children)
        arm.url = f"http://127.0.0.1:{a['outbound']}{configs.PATH}"
        arm.proxies.reverse()  # client first, as the request meets them
    elif name == "envoy":
        p = _start_envoy(arm, "sidecar", tools, wdir, app_port, children)
        arm.url = f"http://127.0.0.1:{p['listen']}{configs.PATH}"
    elif name == "envoy-2hop":
        b = _start_envoy(arm, "server-sidecar", tools, wdir, app_port, children)
        a = _start_envoy(arm, "client-sidecar", tools, wdir, b["listen"], children)
        arm.url = f"http://127.0.0.1:{a['listen']}{configs.PATH}"
        arm.proxies.reverse()
    else:
        raise ValueError(f"unknown arm {name!r}; the arms are {', '.join(ARMS)}")
    _check_path(arm)
    return arm


def _start_trellis(arm, role, tools, wdir, target_port, app_port, children):
    ports = {"outbound": free_port(), "inbound": free_port(), "admin": free_port()}
    d = os.path.join(wdir, role)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "mesh.yaml"), "w") as f:
        f.write(configs.trellis_mesh(target_port))
    boot = os.path.join(d, "bootstrap.yaml")
    with open(boot, "w") as f:
        f.write(configs.trellis_bootstrap(f"{arm.name}-{role}", ports, app_port))
    proc = children.start(
        f"trellis-proxy ({arm.key} {role})",
        [tools["trellis"], "--bootstrap", boot, "--workers", "1"],
        PROXY_CORE,
        os.path.join(d, "proxy.log"),
    )
    wait_http(f"http://127.0.0.1:{ports['admin']}/ready", 20, proc)
    _record(arm, role, proc)
    return ports


def _start_envoy(arm, role, tools, wdir, target_port, children):
    ports = {"listen": free_port(), "admin": free_port()}
    d = os.path.join(wdir, role)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "envoy.json")
    with open(cfg, "w") as f:
        f.write(configs.envoy_one_service(ports["listen"], ports["admin"], target_port))
    proc = children.start(
        f"envoy ({arm.key} {role})",
        envoy_argv(tools, cfg),
        PROXY_CORE,
        os.path.join(d, "envoy.log"),
    )
    wait_http(f"http://127.0.0.1:{ports['admin']}/ready", 30, proc)
    _record(arm, role, proc)
    return ports


def envoy_argv(tools, cfg):
    # One worker thread; no hot restart, so no shared memory region between instances.
    return [tools["envoy"], "-c", cfg, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]


def _record(arm, role, proc):
    arm.proxies.append({"role": role, "proc": proc, "pid": proc.pid, "idle_rss_mib": rss_mib(proc.pid)})


def _check_path(arm):
    """One request through the arm must come back 200 with the 1 KiB body, on its protocol."""
    argv = ["h2load", "-n", "4", "-c", "1", "-H", f":authority: {arm.host}", arm.url]
    if arm.proto == "h1":
        argv.insert(1, "--h1")
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr
    if "4 succeeded" not in out or "4 2xx" not in out or f"({4 * configs.PAYLOAD_BYTES}) data" not in out:
        raise RuntimeError(f"{arm.key}: a request through the arm did not come back 200 with a 1 KiB body:\n{out[-1500:]}")
