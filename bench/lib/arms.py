# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""The arms: how each one's proxies are configured and started, and where the load goes."""

import http.client
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

from . import configs, controlplane
from .procs import free_port, rss_mib, wait_http

ARMS = (
    "direct", "trellis", "envoy", "trellis-2hop", "envoy-2hop", "trellis-2hop-cp", "trellis-2hop-mtls",
    "envoy-2hop-mtls", "trellis-2hop-mtls-nomux",
)
# The control-plane arms: the Mesh's mTLS mode between their two sidecars, and what more
# their sidecars' bootstrap says (nomux: HTTP/1.1 between them stays HTTP/1.1, one request
# per connection, instead of riding one multiplexed HTTP/2 connection).
CP_ARMS = {
    "trellis-2hop-cp": ("DISABLED", ""),
    "trellis-2hop-mtls": ("STRICT", ""),
    "trellis-2hop-mtls-nomux": ("STRICT", "upstream: {multiplex: false}\n"),
}
PROTOCOLS = ("h1", "h2")
PROXY_CORE = 0

# What each arm's `proxies` are called in results.json, in the order a request meets them.
ROLES = {
    "direct": [],
    "trellis": ["sidecar"],
    "envoy": ["sidecar"],
    "trellis-2hop": ["client-sidecar", "server-sidecar"],
    "envoy-2hop": ["client-sidecar", "server-sidecar"],
    "trellis-2hop-cp": ["client-sidecar", "server-sidecar"],
    "trellis-2hop-mtls": ["client-sidecar", "server-sidecar"],
    "envoy-2hop-mtls": ["client-sidecar", "server-sidecar"],
    "trellis-2hop-mtls-nomux": ["client-sidecar", "server-sidecar"],
}


class Arm:
    """One arm for one protocol: its proxy processes and the URL and Host the load uses."""

    def __init__(self, name, proto):
        self.name, self.proto = name, proto
        self.url = None
        self.host = configs.SERVICE
        self.proxies = []  # dicts: role, proc, pid, idle_rss_mib
        # Other processes of the arm, not measured (the control plane), stopped with it.
        self.others = []
        # A Trellis client sidecar's admin port, for its connection counters.
        self.client_admin = None

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
    elif name in CP_ARMS:
        mode, extra = CP_ARMS[name]
        _start_cp_2hop(arm, mode, extra, tools, wdir, app_port, children)
    elif name == "envoy":
        p = _start_envoy(arm, "sidecar", tools, wdir, app_port, children)
        arm.url = f"http://127.0.0.1:{p['listen']}{configs.PATH}"
    elif name == "envoy-2hop":
        b = _start_envoy(arm, "server-sidecar", tools, wdir, app_port, children)
        a = _start_envoy(arm, "client-sidecar", tools, wdir, b["listen"], children)
        arm.url = f"http://127.0.0.1:{a['listen']}{configs.PATH}"
        arm.proxies.reverse()
    elif name == "envoy-2hop-mtls":
        pki = test_pki(os.path.join(wdir, "pki"))
        b = _start_envoy(arm, "server-sidecar", tools, wdir, app_port, children, pki=pki)
        a = _start_envoy(arm, "client-sidecar", tools, wdir, b["listen"], children, pki=pki)
        arm.url = f"http://127.0.0.1:{a['listen']}{configs.PATH}"
        arm.proxies.reverse()
        _check_envoy_mtls(arm, b)
    else:
        raise ValueError(f"unknown arm {name!r}; the arms are {', '.join(ARMS)}")
    _check_path(arm)
    return arm


def _start_trellis(arm, role, tools, wdir, target_port, app_port, children):
    ports = {"outbound": free_port(), "inbound": free_port(), "admin": free_port()}
    d = os.path.join(wdir, role)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "mesh.yaml"), "w") as f:
        f.write(configs.trellis_mesh(target_port, arm.proto))
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


def _start_cp_2hop(arm, mode, extra, tools, wdir, app_port, children):
    """trellis-control (mesh mTLS `mode`), then the server sidecar (label `app: up`, so it
    registers itself as Service `up`'s endpoint; inbound delivers to the upstream), then the
    client sidecar, whose outbound the load uses. Each has a join token for `bench/<role>`
    and certifies itself. Waits until a request through the path answers 200."""
    cp = controlplane.start(tools, wdir, mode, children, arm.key, arm.proto)
    arm.others.append(cp.proc)
    b = _start_trellis_cp(arm, "server-sidecar", configs.SERVICE, tools, wdir, cp, app_port, children, extra)
    a = _start_trellis_cp(arm, "client-sidecar", "bench-client", tools, wdir, cp, app_port, children, extra)
    arm.client_admin = a["admin"]
    arm.url = f"http://127.0.0.1:{a['outbound']}{configs.PATH}"
    arm.proxies.reverse()
    # The client is ready once it has config and a certificate; the server's registration
    # reaches it a moment later.
    end = time.monotonic() + 20
    while True:
        try:
            _check_path(arm)
            break
        except RuntimeError:
            for p in arm.proxies:
                if p["proc"].poll() is not None:
                    raise RuntimeError(f"{arm.key} {p['role']} exited with status {p['proc'].returncode}; see its log") from None
            if time.monotonic() > end:
                raise
            time.sleep(0.1)
    _check_mode(arm, mode, a, b)


def _start_trellis_cp(arm, role, app_label, tools, wdir, cp, app_port, children, extra=""):
    proc, ports = start_cp_sidecar(f"{arm.key} {role}", role, app_label, tools, wdir, cp, app_port, children, extra)
    _record(arm, role, proc)
    return ports


def start_cp_sidecar(label, role, app_label, tools, wdir, cp, app_port, children, extra=""):
    """A trellis-proxy in control-plane mode as service account `bench/<role>`, pinned to
    PROXY_CORE with one worker; returns once /ready says it has config and a certificate."""
    ports = {"outbound": free_port(), "inbound": free_port(), "admin": free_port()}
    d = os.path.join(wdir, role)
    os.makedirs(d, exist_ok=True)
    token = controlplane.token_file(tools, cp, f"{configs.NAMESPACE}/{role}", os.path.join(d, "join.token"))
    boot = os.path.join(d, "bootstrap.yaml")
    with open(boot, "w") as f:
        f.write(configs.trellis_cp_bootstrap(role, app_label, ports, app_port, cp.url, cp.ca_pem, token, extra))
    proc = children.start(
        f"trellis-proxy ({label})",
        [tools["trellis"], "--bootstrap", boot, "--workers", "1"],
        PROXY_CORE,
        os.path.join(d, "proxy.log"),
    )
    wait_http(f"http://127.0.0.1:{ports['admin']}/ready", 20, proc)
    return proc, ports


def _check_mode(arm, mode, client_ports, server_ports):
    """The client sidecar's config must give Service `up` the arm's mode (it decides whether
    the client originates mTLS), and the server sidecar's inbound must refuse plaintext
    under STRICT (so the path that answered spoke mTLS) and answer it under DISABLED (on h2c
    the upstream, nghttpd, may answer an HTTP/1.1 request with an error status; any answer
    shows plaintext is taken)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{client_ports['admin']}/config_dump", timeout=5) as r:
        dump = json.load(r)
    seen = [s.get("mtlsMode") for s in _dicts(dump.get("snapshot")) if s.get("name") == configs.SERVICE and "mtlsMode" in s]
    if seen != [mode]:
        raise RuntimeError(f"{arm.key}: the client sidecar's config gives Service {configs.SERVICE} mtlsMode {seen}, expected [{mode!r}]")
    status = _plaintext_status(f"http://127.0.0.1:{server_ports['inbound']}{configs.PATH}")
    if (mode == "STRICT") != isinstance(status, str):
        raise RuntimeError(f"{arm.key}: a plaintext request to the server sidecar's inbound under {mode} got {status}")


def _dicts(v):
    """Every JSON object inside `v`, depth first."""
    if isinstance(v, dict):
        yield v
        for x in v.values():
            yield from _dicts(x)
    elif isinstance(v, list):
        for x in v:
            yield from _dicts(x)


def _start_envoy(arm, role, tools, wdir, target_port, children, pki=None):
    ports = {"listen": free_port(), "admin": free_port()}
    d = os.path.join(wdir, role)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "envoy.json")
    with open(cfg, "w") as f:
        if pki is None:
            f.write(configs.envoy_one_service(ports["listen"], ports["admin"], target_port))
        elif role == "server-sidecar":
            f.write(configs.envoy_mtls_server(ports["listen"], ports["admin"], target_port, pki))
        else:
            f.write(configs.envoy_mtls_client(ports["listen"], ports["admin"], target_port, pki, arm.proto))
    proc = children.start(
        f"envoy ({arm.key} {role})",
        envoy_argv(tools, cfg),
        PROXY_CORE,
        os.path.join(d, "envoy.log"),
    )
    wait_http(f"http://127.0.0.1:{ports['admin']}/ready", 30, proc)
    _record(arm, role, proc)
    return ports


def test_pki(d):
    """A throwaway CA and two leaves from it, made with openssl: ECDSA P-256, the SPIFFE ID of
    each sidecar its only SAN (a URI), serverAuth and clientAuth, valid for a day, as the
    mesh CA issues them. Returns {"ca": path, "client"/"server": {"cert", "key", "id"}}."""
    os.makedirs(d, exist_ok=True)
    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca-key.pem")
    steps = [
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key],
        ["openssl", "req", "-x509", "-new", "-key", ca_key, "-subj", "/O=trellis-bench test CA", "-days", "1",
         "-sha256", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-out", ca],
    ]
    out = {"ca": ca}
    for role in ("client", "server"):
        spiffe = f"spiffe://{configs.TRUST_DOMAIN}/ns/{configs.NAMESPACE}/sa/{role}-sidecar"
        key, csr, cert, ext = (os.path.join(d, f"{role}.{x}") for x in ("key", "csr", "pem", "ext"))
        with open(ext, "w") as f:
            f.write(
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature, keyEncipherment\n"
                "extendedKeyUsage = serverAuth, clientAuth\n"
                f"subjectAltName = URI:{spiffe}\n"
            )
        steps += [
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
            ["openssl", "req", "-new", "-key", key, "-subj", "/O=trellis-bench", "-out", csr],
            ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-days", "1", "-sha256", "-extfile", ext, "-out", cert],
        ]
        out[role] = {"cert": cert, "key": key, "id": spiffe}
    for argv in steps:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {r.stderr.strip()}")
    return out


def _check_envoy_mtls(arm, server_ports):
    """The server Envoy must refuse plaintext, so the path that answered spoke mTLS."""
    status = _plaintext_status(f"http://127.0.0.1:{server_ports['listen']}{configs.PATH}")
    if not isinstance(status, str):
        raise RuntimeError(f"{arm.key}: the server Envoy answered plaintext with {status}; it must require mTLS")


def _plaintext_status(url):
    """The status of a plaintext GET naming Service `up`, or why there was none (a string)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"host": configs.SERVICE}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
        return f"refused ({e})"


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
