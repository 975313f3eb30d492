#!/usr/bin/env python3
# bench/check-results.py RESULTS_DIR   (e.g. after: bench/run --quick --arms direct,trellis)
"""Checks that a bench run wrote report.md, latency.png and a results.json with every field.

Only the shape is checked, never a timing: CI runs this to keep the harness working.
Prints one line per problem and exits 1 if there is any; else prints a summary line.
"""

import json
import math
import os
import sys

PCT = ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms")
STAT = ("median", "min", "max", "runs")


class Checker:
    def __init__(self):
        self.problems = []
        self.checked = 0

    def fail(self, path, msg):
        self.problems.append(f"{path}: {msg}")

    def number(self, obj, key, path, positive=False):
        self.checked += 1
        v = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
            self.fail(f"{path}.{key}", f"expected a number, found {v!r}")
        elif positive and v <= 0:
            self.fail(f"{path}.{key}", f"expected a number above 0, found {v!r}")

    def stat(self, obj, key, path, runs, positive=False):
        s = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(s, dict):
            self.fail(f"{path}.{key}", f"expected {{median, min, max, runs}}, found {s!r}")
            return
        for k in STAT[:3]:
            self.number(s, k, f"{path}.{key}", positive)
        if not isinstance(s.get("runs"), list) or len(s["runs"]) != runs:
            self.fail(f"{path}.{key}.runs", f"expected {runs} values, found {s.get('runs')!r}")

    def keys(self, obj, keys, path):
        if not isinstance(obj, dict):
            self.fail(path, f"expected an object, found {type(obj).__name__}")
            return False
        missing = [k for k in keys if k not in obj]
        for k in missing:
            self.fail(path, f"missing field {k!r}")
        return not missing


def check(res, c):
    c.keys(res, ("schema", "meta", "arms", "endpoints_rss", "propagation", "ratios"), "results")
    meta = res.get("meta", {})
    c.keys(meta, ("timestamp", "mode", "arms", "protocols", "runs", "rates", "seconds", "load", "machine", "versions", "pinning"), "meta")
    runs, rates, protos = meta.get("runs", 0), [str(r) for r in meta.get("rates", [])], meta.get("protocols", [])
    if not rates:
        c.fail("meta.rates", "no rate measured")
    arms = res.get("arms", {})
    for name in meta.get("arms", []):
        for proto in protos:
            path = f"arms.{name}.{proto}"
            a = arms.get(name, {}).get(proto)
            if not c.keys(a, ("saturation_rps", "saturation_errors", "saturation_cpu_s_per_1k", "idle_rss_mib", "proxies", "latency"), path):
                continue
            c.stat(a, "saturation_rps", path, runs, positive=True)
            proxied = name != "direct"
            if proxied:
                c.stat(a, "saturation_cpu_s_per_1k", path, runs)
                c.number(a, "idle_rss_mib", path, positive=True)
                want = 2 if "2hop" in name else 1
                if len(a["proxies"]) != want:
                    c.fail(f"{path}.proxies", f"expected {want} proxies, found {len(a['proxies'])}")
                for i, p in enumerate(a["proxies"]):
                    pp = f"{path}.proxies[{i}]"
                    if c.keys(p, ("role", "idle_rss_mib", "cpu_s_per_1k", "load_rss_mib"), pp):
                        c.number(p, "idle_rss_mib", pp, positive=True)
                        c.stat(p, "cpu_s_per_1k", pp, runs)
                        c.stat(p, "load_rss_mib", pp, runs, positive=True)
            for rate in rates:
                lp = f"{path}.latency.{rate}"
                lat = a["latency"].get(rate)
                if not c.keys(lat, (*PCT, "achieved_rps", "corrected_samples", "samples", "errors", "cpu_s_per_1k", "added_over_direct"), lp):
                    continue
                for k in PCT:
                    c.stat(lat, k, lp, runs, positive=True)
                c.stat(lat, "achieved_rps", lp, runs, positive=True)
                c.number(lat, "samples", lp, positive=True)
                if proxied:
                    c.stat(lat, "cpu_s_per_1k", lp, runs)
                    if "direct" in meta.get("arms", []):
                        added = lat.get("added_over_direct")
                        if c.keys(added, PCT, f"{lp}.added_over_direct"):
                            for k in PCT:
                                c.stat(added, k, f"{lp}.added_over_direct", runs)
    for kind, v in res.get("endpoints_rss", {}).items():
        if c.keys(v, ("1000", "10000", "per_1000_mib"), f"endpoints_rss.{kind}"):
            for n in ("1000", "10000"):
                c.number(v[n], "rss_mib", f"endpoints_rss.{kind}.{n}", positive=True)
            c.number(v, "per_1000_mib", f"endpoints_rss.{kind}")
    if any(a.startswith("trellis") for a in meta.get("arms", [])) and "trellis" not in res.get("endpoints_rss", {}):
        c.fail("endpoints_rss", "no trellis figures although a trellis arm ran")
    ran = meta.get("arms", [])
    if "trellis-2hop-mtls" in ran:
        hs = res.get("handshakes")
        if c.keys(hs, ("mtls_handshake", "mtls_handshake_get", "plaintext_get", "runs"), "handshakes"):
            for kind in ("mtls_handshake", "mtls_handshake_get", "plaintext_get"):
                c.stat(hs[kind], "per_s", f"handshakes.{kind}", runs, positive=True)
                c.stat(hs[kind], "cpu_ms_per_conn", f"handshakes.{kind}", runs)
        if "trellis-2hop-cp" in ran:
            m = res.get("mtls")
            for proto in protos:
                mp = f"mtls.{proto}"
                if c.keys((m or {}).get(proto), ("throughput", "saturation_cpu_per_1k", "rates"), mp):
                    c.number(m[proto], "throughput", mp, positive=True)
                    for rate in rates:
                        if c.keys(m[proto]["rates"].get(rate), ("added_p50_ms", "added_p99_ms"), f"{mp}.rates.{rate}"):
                            for k in ("added_p50_ms", "added_p99_ms"):
                                c.stat(m[proto]["rates"][rate], k, f"{mp}.rates.{rate}", runs)
    prop = res.get("propagation", {})
    if meta.get("mode") == "full" and "skipped" not in prop:
        if c.keys(prop, ("runs",), "propagation"):
            for i, r in enumerate(prop["runs"]):
                c.number(r, "proxies", f"propagation.runs[{i}]", positive=True)
                if c.keys(r, ("rewrites",), f"propagation.runs[{i}]"):
                    for k in ("p50_ms", "p99_ms", "peak_rss_mib"):
                        c.number(r["rewrites"], k, f"propagation.runs[{i}].rewrites", positive=True)
    elif not isinstance(prop, dict) or not ("skipped" in prop or "runs" in prop):
        c.fail("propagation", "expected runs or a skipped reason")


def main(argv):
    if len(argv) != 1:
        print("usage: bench/check-results.py RESULTS_DIR", file=sys.stderr)
        return 2
    d = argv[0]
    c = Checker()
    for name in ("report.md", "results.json", "latency.png"):
        p = os.path.join(d, name)
        if not os.path.isfile(p) or os.path.getsize(p) == 0:
            c.fail(p, "missing or empty")
    try:
        with open(os.path.join(d, "results.json")) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        c.fail("results.json", f"cannot be read: {e}")
        res = None
    if res is not None:
        check(res, c)
    for p in c.problems:
        print(f"check-results: {p}")
    if c.problems:
        print(f"check-results: {len(c.problems)} problem(s) in {d}")
        return 1
    print(f"check-results: {d}: {c.checked} fields present and well-formed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
