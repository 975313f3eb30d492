# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""One measured run of one arm: load from h2load, and the proxies' CPU and RSS around it."""

import os
import time

from . import load
from .newconn import delta, opened
from .procs import cpu_seconds, rss_mib


def _sample_rss(arm, proc, peak):
    """Polls the proxies' RSS while `proc` (h2load) runs; keeps the peak per proxy."""
    while proc.poll() is None:
        for i, p in enumerate(arm.proxies):
            peak[i] = max(peak[i], rss_mib(p["pid"]))
        time.sleep(0.1)


def _cpu(arm):
    return [cpu_seconds(p["pid"]) for p in arm.proxies]


def _check_alive(arm):
    for p in arm.proxies:
        if p["proc"].poll() is not None:
            raise RuntimeError(f"{arm.key} {p['role']} exited with status {p['proc'].returncode}; see its log")


def saturation(arm, seconds, warmup_s):
    """Closed loop after a short warm-up. CPU is counted over the measured run only."""
    _check_alive(arm)
    load.run_closed(arm.proto, arm.url, arm.host, warmup_s)
    before = _cpu(arm)
    conns = opened(arm.client_admin) if arm.client_admin else None
    peak = [0.0] * len(arm.proxies)
    proc, collect = load.start_closed(arm.proto, arm.url, arm.host, seconds)
    _sample_rss(arm, proc, peak)
    s = collect()
    after = _cpu(arm)
    s["proxies"] = _per_proxy(arm, before, after, peak, s["status_2xx"])
    if conns is not None:
        # Upstream connections the Trellis client sidecar opened during the run.
        s["connections_opened"] = delta(conns, opened(arm.client_admin))
    return s


def fixed_rate(arm, rate, seconds, scratch):
    """Open loop at `rate` requests per second for about `seconds`."""
    _check_alive(arm)
    log_path = os.path.join(scratch, f"h2load-{arm.name}-{arm.proto}-{rate}.log")
    before = _cpu(arm)
    peak = [0.0] * len(arm.proxies)
    run = load.start_open(arm.proto, arm.url, arm.host, rate, seconds, log_path)
    _sample_rss(arm, run["proc"], peak)
    s = load.finish_open(run)
    after = _cpu(arm)
    s["proxies"] = _per_proxy(arm, before, after, peak, s["samples"])
    return s


def _per_proxy(arm, before, after, peak, requests):
    out = []
    for p, b, a, rss in zip(arm.proxies, before, after, peak):
        out.append(
            {
                "role": p["role"],
                "cpu_s": a - b,
                "cpu_s_per_1k": (a - b) / (requests / 1000) if requests else None,
                "rss_mib": rss,
            }
        )
    return out
