"""The reclaim/swap races exercise what they claim: kswapd runs as an
actor of its own and reclaims, direct reclaim happens inside faults, pages
go to swap and come back (scenarios/pressure.py)."""

from __future__ import annotations

import random

from specfault.check.engine import Execution
from specfault.check.scenarios import build


def _chooser(rnd: random.Random):  # type: ignore[no-untyped-def]
    return lambda ex, enabled: rnd.choice(enabled)


def test_faults_under_pressure_interleave_kswapd_and_direct_reclaim() -> None:
    seen = {"kswapd steps": 0, "pgsteal_kswapd": 0, "pgsteal_direct": 0, "pswpout": 0,
            "pswpin": 0, "fault_retry": 0}
    for seed in range(12):
        ex = Execution(build("faults-under-pressure", "pervma"))
        ex.run(_chooser(random.Random(seed)))
        assert ex.failure is None, ex.failure
        seen["kswapd steps"] += sum(1 for a, _ in ex.trace if ex.actor_name(a) == "kswapd0")
        v = ex.state.machine.kernel.vmstat
        for k in seen:
            if k in v:
                seen[k] += v[k]
    assert all(n > 0 for n in seen.values()), seen
