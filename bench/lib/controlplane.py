# Used by bench/run (run: bench/run --arms trellis-2hop-cp,trellis-2hop-mtls); not run alone.
"""trellis-control for the control-plane arms and the handshake figure: the process (started
and stopped by the harness like every child), join tokens from `trellis-control token
create`, and a client certificate signed by its generated mesh CA with openssl."""

import os
import subprocess

from . import configs
from .procs import free_port, wait_http

# Off the proxies' core: the control plane is idle while the load runs (its proxies hold one
# gRPC stream each and nothing changes), and its CPU is not counted as the path's.
CONTROL_CORE = 1


class ControlPlane:
    def __init__(self, proc, grpc_port, http_port, state_dir):
        self.proc = proc
        self.url = f"https://127.0.0.1:{grpc_port}"
        self.http_port = http_port
        self.state_dir = state_dir

    @property
    def ca_pem(self):
        return os.path.join(self.state_dir, "ca.pem")

    @property
    def ca_key(self):
        return os.path.join(self.state_dir, "ca-key.pem")


def start(tools, wdir, mode, children, label, proto="h1"):
    """Starts trellis-control with a mesh of mTLS `mode` and Service `up`; waits for /ready.
    The mesh CA is generated into wdir/control-plane/state at this first start."""
    d = os.path.join(wdir, "control-plane")
    os.makedirs(d, exist_ok=True)
    mesh = os.path.join(d, "mesh.yaml")
    with open(mesh, "w") as f:
        f.write(configs.trellis_cp_mesh(mode, proto))
    grpc, http = free_port(), free_port()
    state = os.path.join(d, "state")
    argv = [
        tools["trellis-control"], "--config", mesh,
        "--grpc-addr", f"127.0.0.1:{grpc}", "--http-addr", f"127.0.0.1:{http}",
        "--state-dir", state, "--registration-grace", "1s",
    ]
    proc = children.start(f"trellis-control ({label})", argv, CONTROL_CORE, os.path.join(d, "control.log"))
    wait_http(f"http://127.0.0.1:{http}/ready", 30, proc)
    cp = ControlPlane(proc, grpc, http, state)
    if not os.path.isfile(cp.ca_pem):
        raise RuntimeError(f"trellis-control ({label}) is ready but wrote no {cp.ca_pem}")
    return cp


def token_file(tools, cp, service_account, path):
    """A join token for `namespace/name`, minted by the real `trellis-control token create`."""
    r = subprocess.run(
        [tools["trellis-control"], "token", "create", "--service-account", service_account, "--state-dir", cp.state_dir],
        capture_output=True, text=True, timeout=30,
    )
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"trellis-control token create --service-account {service_account} failed: {r.stderr.strip()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(r.stdout.strip() + "\n")
    return path


def client_certificate(cp, spiffe_id, d):
    """An ECDSA P-256 key and a leaf for `spiffe_id` (its only SAN, a URI) signed by the
    control plane's CA with openssl, as a sidecar's certificate would be: serverAuth and
    clientAuth, valid for a day. Returns (cert, key) paths."""
    os.makedirs(d, exist_ok=True)
    key, csr, cert, ext = (os.path.join(d, n) for n in ("client.key", "client.csr", "client.pem", "client.ext"))
    with open(ext, "w") as f:
        f.write(
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth, clientAuth\n"
            f"subjectAltName = URI:{spiffe_id}\n"
        )
    steps = [
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
        ["openssl", "req", "-new", "-key", key, "-subj", "/O=trellis-bench", "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", cp.ca_pem, "-CAkey", cp.ca_key,
         "-days", "1", "-sha256", "-extfile", ext, "-out", cert],
    ]
    for argv in steps:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {r.stderr.strip()}")
    return cert, key
