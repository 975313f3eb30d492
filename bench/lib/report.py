# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""Writes report.md and latency.png from results.json's content."""

import os

from .summarize import PCT_KEYS

PCT_NAMES = {"p50_ms": "p50", "p90_ms": "p90", "p99_ms": "p99", "p99_9_ms": "p99.9"}
PROTO_NAMES = {"h1": "HTTP/1.1", "h2": "HTTP/2 (h2c)"}


def _f(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def _s(s, digits=2):
    """median (min–max)"""
    if not s:
        return "–"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def write(results, out_dir):
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(results))
    chart(results, os.path.join(out_dir, "latency.png"))


def ratio_table(results):
    """The Trellis ÷ Envoy table (below 1 is better for Trellis, except throughput)."""
    r = results["ratios"]
    rates = results["meta"]["rates"]
    head = ["path", "throughput ×", "CPU/1k req (sat.)"] + [f"CPU/1k @{x}" for x in rates]
    head += [f"added p99 @{x}" for x in rates] + ["idle RSS", "RSS under load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    hops = {"1hop": "1 hop", "2hop": "2 hops", "2hop-mtls": "2 hops mTLS"}
    for key, v in r.items():
        if key in ("rss_per_1000_endpoints", "newconn"):
            continue
        hop, proto = key.split("/")
        row = [f"{hops[hop]}, {PROTO_NAMES[proto]}", _f(v["throughput"]), _f(v["saturation_cpu_per_1k"])]
        row += [_f(v["rates"][str(x)]["cpu_per_1k"]) for x in rates]
        row += [_f(v["rates"][str(x)]["added_p99_ms"]) for x in rates]
        row += [_f(v["idle_rss"]), _f(v["load_rss"])]
        lines.append("| " + " | ".join(row) + " |")
    if "newconn" in r:
        n = r["newconn"]
        lines.append(f"| new connection per request, 2 hops mTLS (ab, HTTP/1.0) | {_f(n['throughput'])} | {_f(n['cpu_per_1k'])} |"
                     + " |" * (len(head) - 3))
    if "rss_per_1000_endpoints" in r:
        lines.append("")
        lines.append(f"RSS per 1,000 endpoints configured, Trellis ÷ Envoy: {_f(r['rss_per_1000_endpoints'])}")
    return "\n".join(lines)


def markdown(res):
    m = res["meta"]
    out = [f"# Trellis side by side with Envoy: {m['timestamp']} ({m['mode']} run)", ""]
    out += [
        f"Machine: {m['machine']['cpu']}, {m['machine']['cores']} cores, {m['machine']['memory_gib']} GiB, "
        f"Linux {m['machine']['kernel']}; load average at start {', '.join(f'{x:.2f}' for x in m['machine']['loadavg_at_start'])}.",
        f"Versions: trellis {m['versions']['trellis']}; {m['versions']['envoy'] or 'envoy not run'}; "
        f"{m['versions']['h2load']}; {m['versions']['nginx']}; {m['versions']['nghttpd']}.",
        "",
        "Method: every proxy has one worker (`trellis-proxy --workers 1`, `envoy --concurrency 1`) and is "
        f"pinned to core {m['pinning']['proxies']}; h2load, nginx and this harness run on core "
        f"{m['pinning']['load_tool_and_upstream']}. The upstream returns 1 KiB. Envoy keeps its stats, has "
        "no tracer and no access log, generates request ids, and has circuit-breaker limits raised; Trellis "
        "writes its metrics and trace headers, with its access log off. Plaintext between proxies, except "
        "`trellis-2hop-mtls` (mTLS between its sidecars; `trellis-2hop-cp` is its plaintext twin, both "
        "configured by trellis-control, whose CPU is not counted). "
        f"{m['runs']} run(s) per figure, reported as median (min–max); rounds are interleaved across arms. "
        f"Closed loop: {m['seconds']['saturation']} s after {m['seconds']['warmup']} s of warm-up, "
        f"h1 {m['load']['saturation']['h1']['clients']} connections, h2 {m['load']['saturation']['h2']['clients']} "
        f"connections × {m['load']['saturation']['h2']['streams']} streams. Open loop: {m['seconds']['fixed_rate']} s "
        f"per rate, h1 {m['load']['fixed_rate']['h1']['clients']} connections, h2 "
        f"{m['load']['fixed_rate']['h2']['clients']} connections with up to {m['load']['fixed_rate']['h2']['streams']} "
        "streams each; latencies corrected for coordinated omission from h2load's per-request log.",
        "",
        "Upstream: nginx (one worker) for HTTP/1.1 and nghttpd (one worker) for h2c, the same for "
        "every arm of a protocol (nghttpd was chosen when Trellis still sent a `host` that differed "
        "from `:authority` over HTTP/2, which nginx refuses; kept so runs stay comparable). "
        "Envoy runs without a tracer, so it writes only "
        "`x-request-id`; Trellis always writes W3C and B3 trace headers. The machine is shared: other "
        "processes may run on either core during a run, which shows up as spread between runs.",
        "",
        "## Trellis ÷ Envoy",
        "",
        "Medians. Throughput above 1 favours Trellis; every other ratio below 1 favours Trellis.",
        "",
        ratio_table(res),
        "",
    ]
    for proto in m["protocols"]:
        out += [f"## {PROTO_NAMES[proto]}", "", "| arm | saturation rps | CPU s/1k req (sat.) | idle RSS MiB | RSS under load MiB |", "|---|---|---|---|---|"]
        for name, protos in res["arms"].items():
            a = protos[proto]
            load_rss = "–"
            if a["proxies"]:
                load_rss = " + ".join(_f(p["load_rss_mib"]["median"], 1) for p in a["proxies"])
            out.append(
                f"| {name} | {_s(a['saturation_rps'], 0)} | {_s(a['saturation_cpu_s_per_1k'], 3)} | "
                f"{_f(a['idle_rss_mib'], 1)} | {load_rss} |"
            )
        out.append("")
        for rate in [str(x) for x in m["rates"]]:
            out += [f"Latency at {rate} rps, ms (added over direct where given):", ""]
            out += ["| arm | achieved rps | " + " | ".join(PCT_NAMES.values()) + " | CPU s/1k req |", "|---|---|---|---|---|---|---|"]
            for name, protos in res["arms"].items():
                lat = protos[proto]["latency"][rate]
                cells = []
                for k in PCT_KEYS:
                    cell = _s(lat[k], 3)
                    if lat["added_over_direct"]:
                        cell += f"; {lat['added_over_direct'][k]['median']:+.3f}"
                    cells.append(cell)
                note = f" ({lat['corrected_samples']} corrected)" if lat["corrected_samples"] else ""
                out.append(
                    f"| {name} | {_f(lat['achieved_rps']['median'], 0)}{note} | " + " | ".join(cells)
                    + f" | {_s(lat['cpu_s_per_1k'], 3)} |"
                )
            out.append("")
    out += _extras(res)
    out += ["![latency percentiles by arm and rate](latency.png)", ""]
    return "\n".join(out)


def _extras(res):
    out = ["## Memory per endpoint configured", ""]
    if res["endpoints_rss"]:
        out += ["| proxy | RSS at 1,000 endpoints MiB | at 10,000 MiB | per 1,000 MiB | ready at 10,000 s |", "|---|---|---|---|---|"]
        for kind, v in res["endpoints_rss"].items():
            out.append(
                f"| {kind} | {_f(v['1000']['rss_mib'], 1)} | {_f(v['10000']['rss_mib'], 1)} | "
                f"{_f(v['per_1000_mib'], 2)} | {_f(v['10000']['ready_s'], 2)} |"
            )
    else:
        out.append("Not measured (no proxy arm selected).")
    out += _mtls(res)
    out += _newconn(res)
    out += ["", "## Control-plane propagation", ""]
    p = res["propagation"]
    if "runs" in p:
        out += ["| proxies | initial sync s | write → ACK p50 ms | p99 ms | max ms | control plane RSS peak MiB |",
                "|---|---|---|---|---|---|"]
        for r in p["runs"]:
            rw = r.get("rewrites", {})
            out.append(f"| {r['proxies']} | {_f(r.get('initial_sync_s'), 1)} | {_f(rw.get('p50_ms'), 1)} | "
                       f"{_f(rw.get('p99_ms'), 1)} | {_f(rw.get('max_ms'), 1)} | {_f(rw.get('peak_rss_mib'), 0)} |")
    else:
        out.append(f"Not measured: {p.get('skipped') or p.get('error')}.")
    out.append("")
    return out


def _newconn(res):
    """A fresh client connection per request, and the connections each Trellis client
    sidecar opened upstream, with multiplexing on and off."""
    out = ["", "## A new client connection per request, 2 hops mTLS (ab, 32 at once, HTTP/1.0)", ""]
    rows = []
    for name in ("trellis-2hop-mtls", "trellis-2hop-mtls-nomux", "envoy-2hop-mtls"):
        e = res["arms"].get(name, {}).get("h1", {})
        n = e.get("new_connection")
        if not n:
            continue
        conns = n.get("connections_opened", {})
        sat = e.get("saturation_connections_opened", {})
        show = lambda d: ", ".join(f"{k} {_s(v, 0)}" for k, v in d.items() if v and v["max"]) or "none"
        rows.append(
            f"| {name} | {_s(n['rps'], 0)} | {_s(n['cpu_s_per_1k'], 4)} | {n['errors']} of {n['requests']} | "
            f"{show(conns) if conns else '–'} | {show(sat) if sat else '–'} |"
        )
    if not rows:
        return out + ["Not measured (no 2-hop mTLS arm selected)."]
    out += [
        "| arm | requests/s | CPU s per 1k (both sidecars) | errors | upstream connections opened per run, new-connection load | per saturation run (keep-alive) |",
        "|---|---|---|---|---|---|",
    ] + rows
    out += ["", "Connections opened are the Trellis client sidecar's `trellis_upstream_connections_opened_total` "
            "over each run (`http2/mtls`: multiplexed; `http1/mtls`: one per request in flight); each is one TLS handshake. "
            "Envoy's are not counted here."]
    return out


def _mtls(res):
    """mTLS against plaintext between two sidecars, and new connections per second."""
    out = ["", "## mTLS hop against plaintext (trellis-2hop-mtls vs trellis-2hop-cp)", ""]
    m = res.get("mtls")
    if m:
        rates = [str(x) for x in res["meta"]["rates"]]
        head = ["protocol", "throughput ×", "CPU/1k ×, saturation"] + [f"added p50 / p99 ms @{r}" for r in rates]
        out += ["mTLS ÷ plaintext from medians; added latency is mTLS minus plaintext, paired by round, "
                "median (min–max).", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for proto, v in m.items():
            cells = [PROTO_NAMES[proto], _f(v["throughput"]), _f(v["saturation_cpu_per_1k"])]
            for r in rates:
                x = v["rates"][r]
                cells.append(f"{_s(x['added_p50_ms'], 3)} / {_s(x['added_p99_ms'], 3)}")
            out.append("| " + " | ".join(cells) + " |")
    else:
        out.append("Not measured (needs both trellis-2hop-cp and trellis-2hop-mtls).")
    out += ["", "## New connections per second to a sidecar's inbound", ""]
    h = res.get("handshakes") or {}
    if "runs" in h:
        names = {
            "mtls_handshake": f"mTLS handshake only (`openssl s_time -new`, {h['seconds']['handshake']} s)",
            "mtls_handshake_get": f"mTLS handshake + GET (`s_time -new -www`, {h['seconds']['request']} s)",
            "plaintext_get": f"plaintext connect + GET (`ab -c 1`, no keep-alive, {h['seconds']['request']} s)",
        }
        out += [f"One connection at a time, client certificate for `{h['client_id']}` made with openssl from the "
                f"generated mesh CA; {h['tool_versions']['openssl']}; {h['tool_versions']['ab']}.", "",
                "| connection | per second | sidecar CPU ms per connection | refused | closed by the client |", "|---|---|---|---|---|"]
        for kind, name in names.items():
            v = h[kind]
            out.append(f"| {name} | {_s(v['per_s'], 0)} | {_s(v['cpu_ms_per_conn'], 3)} | {v['handshake_errors']} | {v.get('client_closed', '–')} |")
        out += ["", "\"refused\" and \"closed by the client\" are the sidecar's `trellis_tls_handshake_errors_total` over "
                "the runs, apart and with `reason=\"closed\"`. `s_time` without `-www` closes each connection as soon as "
                "its side of the handshake is done, leaving the sidecar's TLS 1.3 session tickets unread, so the kernel "
                "resets the connection while the sidecar writes them (it sends them only after processing the client's "
                "last flight: certificate, its signature and Finished); the sidecar files those as closed by the client. "
                "No run may have refusals (the harness fails otherwise)."]
    else:
        out.append(f"Not measured: {h.get('skipped', 'no figures')}.")
    return out


def chart(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protos = res["meta"]["protocols"]
    rates = [str(x) for x in res["meta"]["rates"]]
    names = list(res["arms"])
    fig, axes = plt.subplots(len(protos), len(PCT_KEYS), figsize=(4 * len(PCT_KEYS), 3.6 * len(protos)), squeeze=False)
    width = 0.8 / max(1, len(names))
    for i, proto in enumerate(protos):
        for j, k in enumerate(PCT_KEYS):
            ax = axes[i][j]
            for n, name in enumerate(names):
                meds, lo, hi = [], [], []
                for rate in rates:
                    s = res["arms"][name][proto]["latency"][rate][k]
                    meds.append(s["median"])
                    lo.append(s["median"] - s["min"])
                    hi.append(s["max"] - s["median"])
                xs = [x + (n - (len(names) - 1) / 2) * width for x in range(len(rates))]
                ax.bar(xs, meds, width, yerr=[lo, hi], capsize=2, label=name)
            ax.set_xticks(range(len(rates)), [f"{r} rps" for r in rates])
            ax.set_title(f"{PROTO_NAMES[proto]} {PCT_NAMES[k]}")
            ax.set_ylabel("ms")
    axes[0][0].legend(fontsize="small")
    fig.suptitle("Latency by arm and rate (median of runs; bars show min–max)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
