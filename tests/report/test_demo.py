"""The demo, as a new user reads it: plots that show every protocol,
bars for one CPU count, one schedule count for the mutant, pagemap entries
that print their bits."""

from __future__ import annotations

import re
from typing import Any

import specfault as sf
from specfault.report import tour
from specfault.sim import PROTOCOLS, compare
from specfault.sim.plots import _plt, _throughput


def test_pagemap_entry_prints_its_bits() -> None:
    m = sf.Machine(nr_frames=4096)
    p = m.spawn()
    a = p.mmap(0, 2 * 4096, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    assert repr(p.pagemap(a)).startswith("PagemapEntry(present=False, pfn=0x0, ")
    p.write(a, b"x")
    e = p.pagemap(a)
    text = str(e)
    assert f"present=True, pfn={e.pfn:#x}, exclusive=True, file_shared=False, swapped=False" in text
    assert f"soft_dirty={e.soft_dirty}" in text and f"raw={e.raw:#018x}" in text
    c = p.fork()
    assert "exclusive=False" in str(p.pagemap(a)) and "exclusive=False" in str(c.pagemap(a))


def _axes(cmp: Any) -> Any:
    plt = _plt()
    fig, ax = plt.subplots()
    _throughput(ax, cmp)
    plt.close(fig)
    return ax


def test_one_cpu_count_is_drawn_as_bars() -> None:
    ax = _axes(compare("app_launch", cpus=[2], faults=200, protocols=PROTOCOLS))
    assert len(ax.patches) == len(PROTOCOLS) and not ax.lines
    assert [t.get_text() for t in ax.get_xticklabels()] == list(PROTOCOLS)


def test_every_protocol_is_told_apart_on_the_line_plot() -> None:
    ax = _axes(compare("pft", cpus=[1, 2], faults=200, protocols=PROTOCOLS))
    styles = {(ln.get_linestyle(), ln.get_marker()) for ln in ax.lines}
    assert len(ax.lines) == len(PROTOCOLS) == len(styles)
    pervma = next(ln for ln in ax.lines if ln.get_label() == "pervma")
    classic = next(ln for ln in ax.lines if ln.get_label() == "classic")
    assert pervma.get_markerfacecolor() == "none"          # hollow: classic shows through
    assert classic.get_markersize() > pervma.get_markersize()


def test_the_mutant_has_one_schedule_count() -> None:
    got: list[Any] = []
    out = tour.kill_one(lambda kind, payload: got.append(payload))
    (summary, report, ex, sched) = got[0]
    assert out["killed"] and ex is not None and ex.failure is not None
    assert re.search(r"found after (\d+) schedules", report).group(1) == str(out["schedules"])
    assert str(sched) == out["schedule"]


def test_the_simulator_part_shows_dufour() -> None:
    assert tour.sim_runs() == sum(len(c) for _, c, _ in tour.SIM_PLAN) * 4
