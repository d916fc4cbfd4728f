"""Reclaim costs the work it does (issue 12): the simulator charges the
model's own reclaim per unit — per folio scanned, per PTE unmapped, per
page written to swap — so a pass that scans more costs more; the emulated
pass of a machine without watermarks is built from the same units."""

from __future__ import annotations

from dataclasses import replace

import pytest

from specfault.sim import CostProfile, run
from specfault.sim.bench import knob_config
from specfault.sim.cost import CostModel
from specfault.sim.workloads import build

FAULTS = 400
FRAMES = 2 * FAULTS + 8192           # what pft gives itself
#: watermarks that put every allocation of the run in direct reclaim
PRESSURE = {"swap_pages": 4096, "watermark_min": FRAMES - 300}


def _vmstat(profile: CostProfile) -> dict[str, int]:
    built = build("pft", "classic", 1, faults=FAULTS, profile=profile,
                  config=knob_config(PRESSURE))
    try:
        built.engine.run()
    finally:
        built.engine.close()
    return dict(built.ctx.machine.kernel.vmstat)


@pytest.mark.parametrize("unit,counter", [("reclaim_scan", "pgscan_direct"),
                                          ("swap_write", "pswpout")])
def test_direct_reclaim_is_charged_per_unit_of_work(unit: str, counter: str) -> None:
    base = CostProfile()
    dearer = replace(base, work_ns={**base.work_ns, unit: base.work_ns[unit] + 1000.0})
    a = run("pft", "classic", 1, faults=FAULTS, knobs=PRESSURE, profile=base)
    b = run("pft", "classic", 1, faults=FAULTS, knobs=PRESSURE, profile=dearer)
    done = _vmstat(base)[counter]
    assert done > 50, done                        # the run did reclaim
    # one CPU: every extra nanosecond per unit is on the critical path
    assert (b.wall_us - a.wall_us) * 1000 == pytest.approx(done * 1000.0, rel=0.02)
    assert a.reclaims == 0                        # no emulated pass on top of the real one


def test_reclaim_work_grows_with_what_it_scans() -> None:
    cm = CostModel(CostProfile(), 1000, 1)
    from specfault.runtime import Work
    one = cm.charge(Work("reclaim_scan", 1), 0, 0.0)
    many = cm.charge(Work("reclaim_scan", 32), 0, 0.0)
    assert many == pytest.approx(32 * one)


def test_the_emulated_pass_is_made_of_the_same_units() -> None:
    p = CostProfile()
    cm = CostModel(p, 1000, 1)
    w = p.work_ns
    assert cm.reclaim_pass_ns() == p.reclaim_batch * (w["reclaim_scan"] + w["reclaim_unmap"]
                                                      + w["swap_write"])
    assert cm.reclaim_pass_ns() == 300_000.0      # the constant it replaced, unchanged
