# Used by bench/run (run: bench/run --arms ...,trellis-2hop-mtls); not run alone.
"""New connections per second against a sidecar's inbound listener, one at a time: mTLS
handshakes with `openssl s_time -new` (alone, and with a GET), and plaintext connect +
request with ApacheBench (`ab`, no keep-alive), for comparison.

The sidecar runs in control-plane mode with a certificate from trellis-control, pinned to the
proxies' core with one worker; the tools run on the load tool's core. The client
certificate is made with openssl from the control plane's generated CA, for a SPIFFE ID of
the trust domain. The mesh is PERMISSIVE so that the same inbound listener takes both the
mTLS and the plaintext connections (its TLS path is the one STRICT uses)."""

import os
import re
import subprocess
import time
import urllib.request

from . import arms as armsmod
from . import configs, controlplane
from .procs import cpu_seconds, rss_mib

TOOL_CORE = 1
CLIENT_ID = f"spiffe://{configs.TRUST_DOMAIN}/ns/rides/sa/trip"
# Seconds per measured run: the handshake figure, then the two with a request.
SECONDS = {"full": {"handshake": 10, "request": 5}, "quick": {"handshake": 2, "request": 1}}
_S_TIME = re.compile(r"(\d+) connections in ([\d.]+) real seconds")
_AB_DONE = re.compile(r"Complete requests:\s+(\d+)")
_AB_FAILED = re.compile(r"Failed requests:\s+(\d+)")
_AB_NON2XX = re.compile(r"Non-2xx responses:\s+(\d+)")
_AB_TIME = re.compile(r"Time taken for tests:\s+([\d.]+) seconds")
_ERRORS = re.compile(r"^trellis_tls_handshake_errors_total\{([^}]*)\} (\d+)", re.M)


def measure(args, mode, t, scratch, up_ports, children, log):
    if "trellis-2hop-mtls" not in args.arms:
        return {"skipped": "trellis-2hop-mtls not selected"}
    secs = SECONDS["quick" if args.quick else "full"]
    wdir = os.path.join(scratch, "handshakes")
    cp = controlplane.start(t, wdir, "PERMISSIVE", children, "handshakes")
    proc, ports = armsmod.start_cp_sidecar("handshakes", "server-sidecar", configs.SERVICE, t, wdir, cp, up_ports["h1"], children)
    cert, key = controlplane.client_certificate(cp, CLIENT_ID, os.path.join(wdir, "client"))
    target = f"127.0.0.1:{ports['inbound']}"
    metrics_url = f"http://127.0.0.1:{ports['admin']}/metrics"
    _check_accepted(target, cert, key, cp.ca_pem)
    tls_args = ["-cert", cert, "-key", key, "-CAfile", cp.ca_pem]

    raw = {"mtls_handshake": [], "mtls_handshake_get": [], "plaintext_get": []}
    for rnd in range(mode["runs"]):
        for kind in raw:
            refused_before, closed_before = _handshake_errors(metrics_url)
            cpu_before = cpu_seconds(proc.pid)
            if kind == "plaintext_get":
                n, seconds = _ab(target, secs["request"])
            else:
                www = ["-www", configs.PATH] if kind == "mtls_handshake_get" else []
                n, seconds = _s_time(target, secs["handshake" if not www else "request"], tls_args + www)
            cpu = cpu_seconds(proc.pid) - cpu_before
            refused_after, closed_after = _handshake_errors(metrics_url)
            errors, closed = refused_after - refused_before, closed_after - closed_before
            # Under TLS 1.3 the client finishes its handshake before the server has checked
            # its certificate: a refusal shows only in the sidecar's error counter. s_time
            # without -www closes the socket as soon as its handshake is done, with the
            # server's session tickets unread, so the kernel resets the connection while the
            # sidecar writes them (after it checked the client's Finished, hence its
            # certificate); the sidecar files those under reason="closed", not as refusals.
            if errors > max(1, n // 100):
                raise RuntimeError(f"handshakes: the sidecar counted {errors} failed handshakes in {n} {kind} connections; see {wdir}")
            raw[kind].append({"per_s": n / seconds, "connections": n, "seconds": seconds,
                              "cpu_ms_per_conn": 1000 * cpu / n if n else None, "handshake_errors": errors, "client_closed": closed})
            log(f"round {rnd + 1}/{mode['runs']} {kind}: {n / seconds:.0f}/s, sidecar CPU {raw[kind][-1]['cpu_ms_per_conn']:.3f} ms per connection")
    out = {"tool_versions": {"openssl": _version(["openssl", "version"]), "ab": _version(["ab", "-V"])},
           "client_id": CLIENT_ID, "seconds": secs, "sidecar_rss_mib": rss_mib(proc.pid), "raw": raw}
    children.stop(proc)
    children.stop(cp.proc)
    return out


def _check_accepted(target, cert, key, ca):
    """One GET over mTLS with openssl s_client, which also verifies the sidecar's chain
    against the CA: it must come back 200, so the sidecar accepted the client certificate."""
    req = f"GET {configs.PATH} HTTP/1.1\r\nHost: {configs.SERVICE}\r\nConnection: close\r\n\r\n"
    r = subprocess.run(
        ["taskset", "-c", str(TOOL_CORE), "openssl", "s_client", "-connect", target, "-cert", cert, "-key", key,
         "-CAfile", ca, "-verify_return_error", "-quiet"],
        input=req, capture_output=True, text=True, timeout=30,
    )
    if "200 OK" not in r.stdout or "x" * configs.PAYLOAD_BYTES not in r.stdout:
        raise RuntimeError(f"handshakes: a GET over mTLS to the sidecar's inbound {target} did not answer 200:\n{(r.stdout + r.stderr)[-1500:]}")


def _s_time(target, seconds, extra):
    """Connections s_time made, over the wall time of its run: s_time's own "real seconds"
    is whole seconds and runs until the clock passes its deadline, up to a second late."""
    argv = ["taskset", "-c", str(TOOL_CORE), "openssl", "s_time", "-connect", target, "-new", "-time", str(seconds), *extra]
    start = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.monotonic() - start
    m = _S_TIME.search(r.stdout)
    if r.returncode != 0 or not m or int(m.group(1)) == 0:
        raise RuntimeError(f"handshakes: {' '.join(argv[3:])} failed:\n{(r.stdout + r.stderr)[-1500:]}")
    return int(m.group(1)), wall


def _ab(target, seconds):
    """ab without -k: a new TCP connection for every request, one at a time."""
    url = f"http://{target}{configs.PATH}"
    argv = ["taskset", "-c", str(TOOL_CORE), "ab", "-q", "-t", str(seconds), "-n", "10000000", "-c", "1", "-H", f"Host: {configs.SERVICE}", url]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    done, failed, took = _AB_DONE.search(r.stdout), _AB_FAILED.search(r.stdout), _AB_TIME.search(r.stdout)
    non2xx = _AB_NON2XX.search(r.stdout)
    if r.returncode != 0 or not (done and failed and took) or int(done.group(1)) == 0 or int(failed.group(1)) or non2xx:
        raise RuntimeError(f"handshakes: {' '.join(argv[3:])} failed or saw errors:\n{(r.stdout + r.stderr)[-1500:]}")
    return int(done.group(1)), float(took.group(1))


def _handshake_errors(url):
    """(refused, closed): failed inbound handshakes the sidecar counted, apart from those of
    clients that hung up mid-handshake (reason="closed"), which are counted separately."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    refused = closed = 0
    for labels, value in _ERRORS.findall(text):
        if 'reason="closed"' in labels:
            closed += int(value)
        else:
            refused += int(value)
    return refused, closed


def _version(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else None
