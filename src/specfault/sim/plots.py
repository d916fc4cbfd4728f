"""Plots of a :class:`~specfault.sim.bench.Comparison` (matplotlib, Agg).

``plot_throughput(cmp, path)``: the figure of merit vs CPU count, one line
per protocol.  ``plot_latency_cdf(cmp, path, cpus=None)``: the fault-latency
CDF of each protocol at one CPU count (the largest by default).
``plot(cmp, path)`` draws both side by side; ``svgs(cmp)`` gives both as
inline SVG for the HTML reports.

With one CPU count the comparison is drawn as bars, one per protocol (a
line through one point per protocol says nothing).  Protocols differ by
colour, marker and line style, so lines that coincide (classic and pervma
on pft) stay visible: pervma's markers are hollow and drawn over classic's.
"""

from __future__ import annotations

from typing import Any

from specfault.sim.bench import ELAPSED, Comparison

#: protocol -> (colour, marker, line style, marker size, hollow)
_STYLE = {"classic": ("tab:red", "o", "-", 10, False), "speculative": ("tab:blue", "s", "--", 7, False),
          "pervma": ("tab:green", "^", ":", 8, True), "dufour": ("tab:purple", "D", "-.", 6, False)}
_OTHER = (None, "x", "-", 6, False)


def _plt() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _figure(cmp: Comparison, r: Any) -> float:
    if cmp.workload in ELAPSED:
        return float(r.wall_us / 1e3)
    if cmp.workload == "mmap1":
        return float(r.ops_per_s / 1e6)
    return float(r.faults_per_s / 1e6)


def _throughput(ax: Any, cmp: Comparison) -> None:
    protocols = list(dict.fromkeys(r.protocol for r in cmp.runs))
    ylabel = ("elapsed (ms)" if cmp.workload in ELAPSED else
              "Mops/s" if cmp.workload == "mmap1" else "faults/s (millions)")
    what = "elapsed time (lower is better)" if cmp.workload in ELAPSED else "throughput"
    cpus = sorted({r.cpus for r in cmp.runs})
    if len(cpus) == 1:
        runs = [next(r for r in cmp.runs if r.protocol == p) for p in protocols]
        ys = [_figure(cmp, r) for r in runs]
        colors = [_STYLE.get(p, _OTHER)[0] or "tab:gray" for p in protocols]
        bars = ax.bar(protocols, ys, color=colors)
        for bar, y, r in zip(bars, ys, runs, strict=True):
            ratio = cmp.ratio(r.protocol, r.cpus)
            label = f"{y:.2f}" + (f"\n{ratio:.2f}x classic" if ratio is not None and r.protocol != "classic" else "")
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_ylim(0, max(ys) * 1.2 if ys and max(ys) > 0 else 1)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{cmp.workload}: {what}, {cpus[0]} CPUs")
        ax.grid(True, axis="y", alpha=0.3)
        return
    for p in protocols:
        runs = sorted((r for r in cmp.runs if r.protocol == p), key=lambda r: r.cpus)
        color, marker, ls, size, hollow = _STYLE.get(p, _OTHER)
        ax.plot([r.cpus for r in runs], [_figure(cmp, r) for r in runs], marker=marker, color=color,
                linestyle=ls, markersize=size, markerfacecolor="none" if hollow else color,
                markeredgewidth=1.6, linewidth=1.8, label=p)
    ax.set_xlabel("CPUs")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{cmp.workload}: {what}")
    ax.grid(True, alpha=0.3)
    ax.legend()


def _cdf(ax: Any, cmp: Comparison, cpus: int | None) -> None:
    n = cpus or max(r.cpus for r in cmp.runs)
    for r in cmp.runs:
        if r.cpus != n or not r.cdf:
            continue
        color, _, ls, _, _ = _STYLE.get(r.protocol, _OTHER)
        k = len(r.cdf)
        ax.plot(r.cdf, [(i + 1) / k for i in range(k)], color=color, linestyle=ls, linewidth=1.8,
                label=r.protocol)
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


def svg_of(fig_obj: Any) -> str:
    """A matplotlib figure as inline SVG markup (text drawn as paths; the
    hash salt fixed, so the same figure gives the same markup)."""
    import io

    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "specfault"}):
        fig_obj.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def svgs(cmp: Comparison, cpus: int | None = None) -> list[tuple[str, str]]:
    """The two plots of :func:`plot` as inline SVG markup, with captions."""
    plt = _plt()
    out = []
    for draw, caption in ((lambda ax: _throughput(ax, cmp),
                           "figure of merit per protocol" + ("" if len({r.cpus for r in cmp.runs}) == 1
                                                              else " vs CPU count")),
                          (lambda ax: _cdf(ax, cmp, cpus), "fault latency CDF")):
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax)
        fig.tight_layout()
        out.append((svg_of(fig), f"{cmp.workload}: {caption}"))
        plt.close(fig)
    return out
