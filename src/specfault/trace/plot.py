"""Plots of simulated trace runs (matplotlib, Agg): a per-thread timeline
for each protocol (at the first CPU count run), and the fault-latency CDFs
of every run."""

from __future__ import annotations

from typing import Any

from specfault.sim.plots import _STYLE, _plt

#: timeline colours: what a thread was doing
_KIND = {"fault": ("tab:blue", "fault"), "writer": ("tab:red", "mmap writer (mmap, munmap, "
                                                                "mprotect, ...)"),
         "order": ("tab:orange", "waiting for the trace's order"),
         "blocked": ("0.85", "blocked (as on the host)"), "exec": ("tab:green", "exec")}


def plot(runs: list[Any], path: str, trace: Any) -> None:
    plt = _plt()
    first = runs[0].result.cpus
    shown = [r for r in runs if r.result.cpus == first]
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(11, 2.2 * len(shown) + 3.2),
                             gridspec_kw={"height_ratios": [2] * len(shown) + [1.6]})
    tids = sorted(trace.tasks)
    row = {tid: i for i, tid in enumerate(tids)}
    for ax, r in zip(axes, shown, strict=False):
        for kind, (color, _label) in _KIND.items():
            bars: dict[int, list[tuple[float, float]]] = {}
            for tid, k, t0, t1 in r.timeline:
                if k == kind and tid in row:
                    bars.setdefault(tid, []).append((t0 / 1e6, max(t1 - t0, 1.0) / 1e6))
            for tid, segs in bars.items():
                ax.broken_barh(segs, (row[tid] - 0.4, 0.8), facecolors=color)
        ax.set_yticks(range(len(tids)))
        ax.set_yticklabels([f"{tid} {trace.tasks[tid].get('comm', '')}"[:22] for tid in tids],
                           fontsize=6)
        ax.set_title(f"{r.result.protocol}, {first} CPUs: {r.result.wall_us / 1e3:.1f} ms "
                     f"(host: {r.host_ns / 1e6:.1f} ms on {r.host_cpus})", fontsize=9)
        ax.set_xlabel("simulated ms since exec", fontsize=8)
        ax.invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c, _ in _KIND.values()]
    axes[0].legend(handles, [lab for _, lab in _KIND.values()], fontsize=6, loc="upper right")
    ax = axes[-1]
    for r in runs:
        x = r.result
        color = _STYLE.get(x.protocol, (None,))[0]
        if x.cdf:
            n = len(x.cdf)
            ax.plot(x.cdf, [(i + 1) / n for i in range(n)], color=color,
                    linestyle=["-", "--", ":", "-."][sorted({q.result.cpus for q in runs}).index(x.cpus) % 4],
                    label=f"{x.protocol} {x.cpus} CPUs")
    ax.set_xscale("log")
    ax.set_xlabel("fault latency (µs)")
    ax.set_ylabel("CDF")
    ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{' '.join(trace.header.get('command', []))}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
