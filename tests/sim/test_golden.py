"""Guard rail for tuning the simulator: a small run of every workload under
every protocol gives exactly the figures recorded in tests/sim/golden/ —
both through ``Engine.run()`` (the batched event loop with its shortcuts)
and through a loop of ``Engine.step()`` (one event at a time, no
shortcut).  A speed trick that changes behaviour fails here.

After a *deliberate* change of simulated behaviour:
``python tests/sim/make_golden.py`` rewrites the files (commit the diff).
"""

from __future__ import annotations

from typing import Any

import pytest
from make_golden import CPUS, PARAMS, by_run, by_steps, golden_path, load

from specfault.sim.bench import PROTOCOLS
from specfault.sim.workloads import WORKLOADS

CASES = [(w, p) for p in PROTOCOLS for w in WORKLOADS]


def _diff(got: dict[str, Any], want: dict[str, Any]) -> str:
    keys = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    return "; ".join(f"{k}: {got.get(k)!r:.150} != golden {want.get(k)!r:.150}" for k in keys)


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, Any]]:
    return {p: load(p) for p in PROTOCOLS}


def test_golden_files_cover_every_workload_and_protocol(golden: dict[str, dict[str, Any]]) -> None:
    for p in PROTOCOLS:
        assert golden_path(p).exists()
        assert golden[p]["cpus"] == CPUS
        assert set(golden[p]["runs"]) == set(WORKLOADS)
        for w in WORKLOADS:
            assert golden[p]["runs"][w]["params"] == PARAMS[w]
            assert golden[p]["runs"][w]["result"]["faults"] > 0 or w == "mmap1"


@pytest.mark.parametrize("workload,protocol", CASES)
def test_run_and_step_loop_give_the_golden_figures(workload: str, protocol: str,
                                                   golden: dict[str, dict[str, Any]]) -> None:
    want = golden[protocol]["runs"][workload]["result"]
    ran = by_run(workload, protocol)
    assert ran == want, f"Engine.run(): {_diff(ran, want)}"
    stepped = by_steps(workload, protocol)
    assert stepped == want, f"Engine.step() loop: {_diff(stepped, want)}"
