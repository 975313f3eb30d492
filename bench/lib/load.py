# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""Load with h2load: closed-loop saturation, and open-loop constant rate with latencies
taken from h2load's per-request log and corrected for coordinated omission."""

import os
import re
import subprocess
import tempfile

# Closed loop: the same connections (and, on h2, streams per connection) for every arm.
SATURATION = {"h1": {"clients": 32, "streams": 1}, "h2": {"clients": 4, "streams": 32}}
# Open loop: enough connections (h1) or streams (h2) that a request is almost never held
# back behind a slow one; the correction below accounts for the rare times it is.
FIXED_RATE = {"h1": {"clients": 50, "streams": 1}, "h2": {"clients": 4, "streams": 100}}
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
# h2load processes not yet waited for, so that an interrupted run can stop them too.
RUNNING = set()


def _base_argv(proto, clients, streams, host):
    argv = ["taskset", "-c", "1", "h2load", "-t", "1", "-c", str(clients), "-m", str(streams)]
    if proto == "h1":
        argv.append("--h1")
    # h2load sends :authority as Host on HTTP/1.1 (a `host` header would be a second one).
    if host:
        argv += ["-H", f":authority: {host}"]
    return argv


def _summary(text):
    """The counts h2load prints: done/succeeded/failed/errored and 2xx, with the duration."""
    out = {}
    m = re.search(r"finished in ([\d.]+)(m?s)", text)
    if m:
        out["seconds"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
        out.update({k: int(v) for k, v in zip(keys, m.groups())})
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["status_2xx"] = int(m.group(1))
        out["status_other"] = sum(int(x) for x in m.groups()[1:])
    if "succeeded" not in out or "seconds" not in out:
        raise RuntimeError(f"cannot read h2load's output:\n{text[-2000:]}")
    return out


def start_closed(proto, url, host, seconds):
    """Starts a closed loop for `seconds`: every connection keeps its streams busy.
    Returns the process and a function that waits for it and gives its summary, with
    `rps`, successful (2xx) requests per second."""
    cfg = SATURATION[proto]
    argv = _base_argv(proto, cfg["clients"], cfg["streams"], host) + ["-D", f"{round(seconds * 1000)}ms", url]
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    RUNNING.add(proc)

    def collect():
        proc.wait(seconds + 60)
        RUNNING.discard(proc)
        out.seek(0)
        s = _summary(out.read())
        out.close()
        s["rps"] = s["status_2xx"] / s["seconds"]
        return s

    return proc, collect


def run_closed(proto, url, host, seconds):
    return start_closed(proto, url, host, seconds)[1]()


def start_open(proto, url, host, rate, seconds, log_path):
    """Starts a constant-rate run; the caller waits on it and passes it to `finish_open`.

    Each client sends at rate/clients per second. Clients start 1 ms apart (h2load's
    finest connection rate), which spreads their send times across the interval instead of
    sending every client's request at the same instant."""
    cfg = FIXED_RATE[proto]
    clients = cfg["clients"]
    per_client = max(1, round(rate / clients))
    total = round(per_client * clients * seconds)
    # h2load appends to an existing log file.
    if os.path.exists(log_path):
        os.unlink(log_path)
    argv = _base_argv(proto, clients, cfg["streams"], host) + [
        "--rps", str(per_client), "-n", str(total), "-r", "1", "--rate-period", "1ms",
        "--log-file", log_path, url,
    ]
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    RUNNING.add(proc)
    return {"proc": proc, "out": out, "log": log_path, "proto": proto, "rate": per_client * clients, "per_client": per_client}


def finish_open(run):
    run["proc"].wait(60)
    RUNNING.discard(run["proc"])
    run["out"].seek(0)
    s = _summary(run["out"].read())
    run["out"].close()
    s.update(latencies(run["log"], run["proto"], run["per_client"]))
    s["target_rps"] = run["rate"]
    os.unlink(run["log"])
    return s


def latencies(log_path, proto, per_client_rate):
    """Percentiles in ms from h2load's log (start µs, status, duration µs), corrected.

    h2load holds a request back when its connection (h1) or all its streams (h2) are busy,
    then measures it from when it was finally sent: the coordinated omission that hides
    queueing. We add, for each response slower than the interval at which its connection
    issues requests, the samples the held-back requests would have seen (the correction
    HdrHistogram applies with an expected interval). `corrected` counts those samples."""
    starts, samples = [], []
    errors = 0
    with open(log_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            if not parts[1].startswith("2"):
                errors += 1
                continue
            starts.append(int(parts[0]))
            samples.append(int(parts[2]))
    if not samples:
        raise RuntimeError(f"h2load logged no successful request in {log_path}")
    streams = FIXED_RATE[proto]["streams"]
    interval_us = 1e6 * streams / per_client_rate
    extra = []
    for us in samples:
        missing = us - interval_us
        while missing >= interval_us:
            extra.append(missing)
            missing -= interval_us
    allv = sorted(samples + extra)
    span = (max(starts) - min(starts)) / 1e6
    out = {f"p{_label(p)}_ms": _pct(allv, p) / 1000 for p in PERCENTILES}
    out.update(
        {
            "samples": len(samples),
            "corrected": len(extra),
            "log_errors": errors,
            "max_ms": allv[-1] / 1000,
            "achieved_rps": (len(samples) - 1) / span if span > 0 else 0.0,
        }
    )
    return out


def _label(p):
    return str(p).rstrip("0").rstrip(".").replace(".", "_")


def _pct(sorted_values, p):
    # Nearest rank: the smallest value with at least p% of the samples at or below it.
    k = max(0, min(len(sorted_values) - 1, int(-(-len(sorted_values) * p // 100)) - 1))
    return sorted_values[k]


def stop_running():
    """Stops, by PID, any h2load still running (only after an error or a signal)."""
    for proc in list(RUNNING):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        RUNNING.discard(proc)
