"""Plots of a :class:`~specfault.sim.bench.Comparison` (matplotlib, Agg).

``plot_throughput(cmp, path)``: the figure of merit vs CPU count, one line
per protocol.  ``plot_latency_cdf(cmp, path, cpus=None)``: the fault-latency
CDF of each protocol at one CPU count (the largest by default).
``plot(cmp, path)`` draws both side by side.
"""

from __future__ import annotations

from typing import Any

from specfault.sim.bench import ELAPSED, Comparison

_STYLE = {"classic": ("tab:red", "o"), "speculative": ("tab:blue", "s"), "pervma": ("tab:green", "^"),
          "dufour": ("tab:purple", "D")}


def _plt() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _throughput(ax: Any, cmp: Comparison) -> None:
    protocols = list(dict.fromkeys(r.protocol for r in cmp.runs))
    for p in protocols:
        runs = sorted((r for r in cmp.runs if r.protocol == p), key=lambda r: r.cpus)
        color, marker = _STYLE.get(p, (None, "x"))
        if cmp.workload in ELAPSED:
            ys = [r.wall_us / 1e3 for r in runs]
        elif cmp.workload == "mmap1":
            ys = [r.ops_per_s / 1e6 for r in runs]
        else:
            ys = [r.faults_per_s / 1e6 for r in runs]
        ax.plot([r.cpus for r in runs], ys, marker=marker, color=color, label=p)
    ax.set_xlabel("CPUs")
    ax.set_ylabel("elapsed (ms)" if cmp.workload in ELAPSED else
                  "Mops/s" if cmp.workload == "mmap1" else "faults/s (millions)")
    ax.set_title(f"{cmp.workload}: {'elapsed time' if cmp.workload in ELAPSED else 'throughput'}")
    ax.grid(True, alpha=0.3)
    ax.legend()


def _cdf(ax: Any, cmp: Comparison, cpus: int | None) -> None:
    n = cpus or max(r.cpus for r in cmp.runs)
    for r in cmp.runs:
        if r.cpus != n or not r.cdf:
            continue
        color, _ = _STYLE.get(r.protocol, (None, "x"))
        k = len(r.cdf)
        ax.plot(r.cdf, [(i + 1) / k for i in range(k)], color=color, label=r.protocol)
    ax.set_xscale("log")
    ax.set_xlabel("fault latency (µs)")
    ax.set_ylabel("fraction of faults")
    ax.set_title(f"{cmp.workload}: fault latency CDF, {n} CPUs")
    ax.grid(True, alpha=0.3)
    ax.legend()


def plot_throughput(cmp: Comparison, path: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _throughput(ax, cmp)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency_cdf(cmp: Comparison, path: str, cpus: int | None = None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _cdf(ax, cmp, cpus)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(cmp: Comparison, path: str, cpus: int | None = None) -> str:
    """Throughput vs CPUs and the latency CDF, side by side, in one file."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    _throughput(a, cmp)
    _cdf(b, cmp, cpus)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
