"""bench/soak_plot.py OUT: draws OUT/soak.png from the CSV files `trellis __soak` wrote there:
RSS, open descriptors and runtime tasks of every process over time, and the p99 with the
failures per 10 s. A process that was restarted draws one line per life."""
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: Path) -> None:
    lives = defaultdict(list)
    with open(out / "processes.csv") as f:
        for row in csv.DictReader(f):
            lives[(row["process"], row["pid"])].append(row)
    with open(out / "requests.csv") as f:
        rows = list(csv.DictReader(f))
    with open(out / "events.csv") as f:
        restarts = [float(r["t"]) for r in csv.DictReader(f) if "control plane restarted" in r["event"]]

    fig, axes = plt.subplots(4, 1, figsize=(12, 14), sharex=True)
    panels = [
        ("rss_kib", "RSS (MiB)", lambda v: float(v) / 1024),
        ("fds", "open descriptors", float),
        ("tasks", "runtime tasks", float),
    ]
    names = sorted({name for name, _ in lives})
    colours = {n: plt.cm.tab20(i % 20) for i, n in enumerate(names)}
    for ax, (key, label, conv) in zip(axes, panels):
        labelled = set()
        for (name, _pid), samples in sorted(lives.items()):
            pts = [(float(s["t"]) / 60, conv(s[key])) for s in samples if s[key] != ""]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color=colours[name], linewidth=1,
                    label=None if name in labelled else name)
            labelled.add(name)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for t in restarts:
            ax.axvline(t / 60, color="grey", alpha=0.15)
    axes[0].legend(fontsize=7, ncol=4, loc="upper left")
    ax = axes[3]
    t = [float(r["t"]) / 60 for r in rows]
    ax.plot(t, [float(r["p99_ms"]) for r in rows], color="black", label="p99 (ms)")
    ax.set_ylabel("p99 per 10 s (ms)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.bar(t, [int(r["expected"]) for r in rows], width=0.15, color="orange", alpha=0.6, label="expected failures")
    ax2.bar(t, [int(r["unexpected"]) for r in rows], width=0.15, color="red", alpha=0.8, label="unexpected failures")
    ax2.set_ylabel("failures per 10 s")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("minutes (grey lines: control-plane restarts)")
    summary = (out / "summary.txt").read_text().splitlines()
    fig.suptitle(summary[0] if summary else "soak", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=90)
    print(f"soak: plot in {out / 'soak.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
