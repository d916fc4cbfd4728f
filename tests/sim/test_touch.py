"""Ctx.touch is the model's one fault-retry loop (access.user_access) with
the simulator's stopwatch: each fault's latency runs from the access that
faulted to the handler's return, per thread — threads interleave, so a
stopwatch shared between them would time one thread's fault from another
thread's start."""

from __future__ import annotations

import pytest

from specfault.sim.workloads import build


@pytest.mark.parametrize("protocol", ["classic", "speculative"])
def test_fault_latency_is_per_thread(protocol: str) -> None:
    built = build("pft", protocol, 4, faults=800)
    built.engine.run()
    built.engine.close()
    lat = built.ctx.fault_lat
    assert built.ctx.faults == len(lat) >= 800
    # one fault costs at least the clear_page it does: never ~0 or negative
    assert min(lat) > 0.1, min(lat)
