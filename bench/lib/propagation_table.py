"""Prints bench/propagation.sh's results file (one JSON line per fleet) as a table."""
import json
import sys


def fmt(v, spec="{:.0f}"):
    return "-" if v is None else spec.format(v)


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    print()
    print("| fleet | initial sync | write -> ACK p50 / p99 | with churn p50 / p99 | CPU per change | reconnect in sync | RSS peak (sync / rewrites / churn / reconnect) |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        rw, ch, rc = r.get("rewrites", {}), r.get("churn", {}), r.get("reconnect", {})
        scope = f"scoped {r['scoped_calls']}" if r["scoped_calls"] else "unscoped"
        print(
            f"| {r['name']}: {r['proxies']:,} proxies, {r['services']:,} Services, {scope} "
            f"| {r['initial_sync_s']:.1f} s "
            f"| {fmt(rw.get('p50_ms'))} / {fmt(rw.get('p99_ms'))} ms "
            f"| {fmt(ch.get('p50_ms'))} / {fmt(ch.get('p99_ms'))} ms "
            f"| {fmt(ch.get('cpu_ms_per_change'), '{:.2f}')} ms "
            f"| {fmt(rc.get('in_sync_s'), '{:.1f}')} s "
            f"| {fmt(r.get('initial_sync_peak_rss_mib'))} / {fmt(rw.get('peak_rss_mib'))} / "
            f"{fmt(ch.get('peak_rss_mib'))} / {fmt(rc.get('peak_rss_mib'))} MiB |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
