# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""Turns the raw runs into results.json: median, min and max per figure, latency added
over direct (paired by round), and the Trellis ÷ Envoy ratios."""

import statistics

from .load import PERCENTILES, _label

PCT_KEYS = [f"p{_label(p)}_ms" for p in PERCENTILES]


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def _proxy_figures(runs, idle):
    """Per proxy: CPU per 1k requests and RSS under load across `runs`; plus idle RSS."""
    out = []
    for i, p in enumerate(idle):
        out.append(
            {
                "role": p["role"],
                "idle_rss_mib": p["idle_rss_mib"],
                "cpu_s_per_1k": stats([r["proxies"][i]["cpu_s_per_1k"] for r in runs]),
                "load_rss_mib": stats([r["proxies"][i]["rss_mib"] for r in runs]),
            }
        )
    return out


def _opened(runs):
    """Upstream connections a Trellis client sidecar opened per run, by protocol/transport."""
    keys = sorted({k for r in runs for k in r.get("connections_opened", {})})
    return {k: stats([r.get("connections_opened", {}).get(k, 0) for r in runs]) for k in keys}


def _total_cpu(runs):
    # All of an arm's proxies together: what the mesh costs per request on that path.
    return stats([sum(p["cpu_s_per_1k"] for p in r["proxies"]) for r in runs]) if runs and runs[0]["proxies"] else None


def build(meta, raw, idle, endpoints, propagation, handshakes):
    arms = {}
    for key, data in raw.items():
        name, proto = key.split("/")
        sat = data["saturation"]
        entry = {
            "saturation_rps": stats([r["rps"] for r in sat]),
            "saturation_errors": sum(r["failed"] + r["errored"] + r["timeout"] + r["status_other"] for r in sat),
            "saturation_cpu_s_per_1k": _total_cpu(sat),
            "idle_rss_mib": sum(p["idle_rss_mib"] for p in idle[key]) if idle[key] else None,
            "proxies": _proxy_figures(sat, idle[key]),
            "latency": {},
        }
        if any("connections_opened" in r for r in sat):
            entry["saturation_connections_opened"] = _opened(sat)
        if data.get("newconn"):
            nc = data["newconn"]
            entry["new_connection"] = {
                "rps": stats([r["rps"] for r in nc]),
                "cpu_s_per_1k": stats([r["cpu_s_per_1k"] for r in nc]),
                "errors": sum(r["failed"] + r["non_2xx"] for r in nc),
                "requests": sum(r["requests"] for r in nc),
                "proxies": [
                    {"role": p["role"], "cpu_s_per_1k": stats([r["proxies"][i]["cpu_s_per_1k"] for r in nc])}
                    for i, p in enumerate(idle[key])
                ],
            }
            if any("connections_opened" in r for r in nc):
                entry["new_connection"]["connections_opened"] = _opened(nc)
        for rate, runs in data["rates"].items():
            lat = {k: stats([r[k] for r in runs]) for k in PCT_KEYS}
            lat["achieved_rps"] = stats([r["achieved_rps"] for r in runs])
            lat["corrected_samples"] = sum(r["corrected"] for r in runs)
            lat["samples"] = sum(r["samples"] for r in runs)
            lat["errors"] = sum(r["log_errors"] + r["failed"] + r["errored"] + r["timeout"] for r in runs)
            lat["cpu_s_per_1k"] = _total_cpu(runs)
            lat["proxies"] = [
                {"role": p["role"], "cpu_s_per_1k": stats([r["proxies"][i]["cpu_s_per_1k"] for r in runs])}
                for i, p in enumerate(idle[key])
            ]
            lat["added_over_direct"] = None
            entry["latency"][rate] = lat
        arms.setdefault(name, {})[proto] = entry

    _added_over_direct(arms, raw)
    return {
        "schema": 1,
        "meta": meta,
        "arms": arms,
        "endpoints_rss": endpoints,
        "propagation": propagation,
        "ratios": ratios(arms, endpoints),
        "mtls": mtls_cost(arms, raw),
        "handshakes": handshake_stats(handshakes),
    }


def _added_over_direct(arms, raw):
    """For each round, arm percentile minus direct's in the same round (same protocol and
    rate), then median/min/max of those differences."""
    if "direct" not in arms:
        return
    for name, protos in arms.items():
        if name == "direct":
            continue
        for proto, entry in protos.items():
            for rate, lat in entry["latency"].items():
                mine = raw[f"{name}/{proto}"]["rates"][rate]
                base = raw[f"direct/{proto}"]["rates"][rate]
                lat["added_over_direct"] = {k: stats([m[k] - b[k] for m, b in zip(mine, base)]) for k in PCT_KEYS}


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def _med(s):
    return s["median"] if s else None


def ratios(arms, endpoints):
    """Trellis ÷ Envoy, from medians, for 1 hop and 2 hops on each protocol."""
    out = {}
    pairs = {
        "1hop": ("trellis", "envoy"),
        "2hop": ("trellis-2hop", "envoy-2hop"),
        "2hop-mtls": ("trellis-2hop-mtls", "envoy-2hop-mtls"),
    }
    for hop, (t, e) in pairs.items():
        if t not in arms or e not in arms:
            continue
        for proto in arms[t]:
            ta, ea = arms[t][proto], arms[e][proto]
            r = {
                "throughput": _ratio(_med(ta["saturation_rps"]), _med(ea["saturation_rps"])),
                "saturation_cpu_per_1k": _ratio(_med(ta["saturation_cpu_s_per_1k"]), _med(ea["saturation_cpu_s_per_1k"])),
                "idle_rss": _ratio(ta["idle_rss_mib"], ea["idle_rss_mib"]),
                "load_rss": _ratio(
                    sum(_med(p["load_rss_mib"]) for p in ta["proxies"]),
                    sum(_med(p["load_rss_mib"]) for p in ea["proxies"]),
                ),
                "rates": {},
            }
            for rate in ta["latency"]:
                tl, el = ta["latency"][rate], ea["latency"][rate]
                rr = {"cpu_per_1k": _ratio(_med(tl["cpu_s_per_1k"]), _med(el["cpu_s_per_1k"]))}
                for k in PCT_KEYS:
                    if tl["added_over_direct"] and el["added_over_direct"]:
                        rr[f"added_{k}"] = _ratio(_med(tl["added_over_direct"][k]), _med(el["added_over_direct"][k]))
                    else:
                        rr[f"added_{k}"] = None
                r["rates"][rate] = rr
            out[f"{hop}/{proto}"] = r
    t, e = arms.get("trellis-2hop-mtls", {}).get("h1", {}), arms.get("envoy-2hop-mtls", {}).get("h1", {})
    if "new_connection" in t and "new_connection" in e:
        tn, en = t["new_connection"], e["new_connection"]
        out["newconn"] = {
            "throughput": _ratio(_med(tn["rps"]), _med(en["rps"])),
            "cpu_per_1k": _ratio(_med(tn["cpu_s_per_1k"]), _med(en["cpu_s_per_1k"])),
        }
    if "trellis" in endpoints and "envoy" in endpoints:
        out["rss_per_1000_endpoints"] = _ratio(endpoints["trellis"]["per_1000_mib"], endpoints["envoy"]["per_1000_mib"])
    return out


def mtls_cost(arms, raw, plain="trellis-2hop-cp", mtls="trellis-2hop-mtls"):
    """The mTLS hop against plaintext, both in control-plane mode: throughput and CPU ratios
    of medians, and latency added by mTLS, paired by round (mTLS percentile minus plaintext's
    in the same round, rate and protocol). None unless both arms ran."""
    if plain not in arms or mtls not in arms:
        return None
    out = {}
    for proto in arms[mtls]:
        p, m = arms[plain][proto], arms[mtls][proto]
        r = {
            "throughput": _ratio(_med(m["saturation_rps"]), _med(p["saturation_rps"])),
            "saturation_cpu_per_1k": _ratio(_med(m["saturation_cpu_s_per_1k"]), _med(p["saturation_cpu_s_per_1k"])),
            "rates": {},
        }
        for rate in m["latency"]:
            mine, base = raw[f"{mtls}/{proto}"]["rates"][rate], raw[f"{plain}/{proto}"]["rates"][rate]
            rr = {f"added_{k}": stats([a[k] - b[k] for a, b in zip(mine, base)]) for k in PCT_KEYS}
            rr["cpu_per_1k"] = _ratio(_med(m["latency"][rate]["cpu_s_per_1k"]), _med(p["latency"][rate]["cpu_s_per_1k"]))
            r["rates"][rate] = rr
        out[proto] = r
    return out


def handshake_stats(h):
    """Median (min-max) per kind of new-connection figure; the raw runs stay beside them."""
    if "raw" not in h:
        return h
    out = {k: v for k, v in h.items() if k != "raw"}
    out["runs"] = h["raw"]
    for kind, runs in h["raw"].items():
        out[kind] = {
            "per_s": stats([r["per_s"] for r in runs]),
            "cpu_ms_per_conn": stats([r["cpu_ms_per_conn"] for r in runs]),
            "handshake_errors": sum(r["handshake_errors"] for r in runs),
            "client_closed": sum(r.get("client_closed", 0) for r in runs),
        }
    return out
