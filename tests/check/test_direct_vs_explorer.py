"""Guard rail for tuning the drivers: every race scenario
(``specfault check --list-scenarios``), under every protocol it applies to,
ends the same way through the direct driver as through the explorer with a
non-preemptive chooser.

The explorer runs the scenario's threads as tasks and, with
``engine.nonpreemptive``, keeps running the current one until it finishes
(or blocks), then the lowest-numbered runnable one; RCU callbacks run once
no task can.  The direct driver cannot interleave tasks (an op that would
block raises ``Deadlock``), so it runs the same threads to completion one
after the other in that order — the same tasks, built by the same
``Execution`` setup — then the ready RCU callbacks.  The two must agree on
everything the scenario observes: every step's result (the scenario's
``observe``), the final maps and memory contents of every process, the
kernel's event counters, and the end-of-run checks.  The direct driver
takes the inline fast paths (``runtime/fast.py``, the lock fast paths), the
explorer the op objects: a fast path that behaves differently fails here.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from specfault.check.engine import Execution, nonpreemptive
from specfault.check.scenario import lookup, registered
from specfault.check.scenarios.base import final_observation
from specfault.check.scenarios.races import SPECS
from specfault.runtime import direct
from specfault.sync.lockdep import LOCKDEP, check_exit

#: every registered race scenario, one per protocol (``mm.<race>@<protocol>``;
#: the ``+<mutant>`` variants are the same scenarios with a decision taken away)
CASES = [n for n in registered() if n.startswith("mm.") and "+" not in n]


def _outcome(ex: Execution) -> dict[str, Any]:
    world = ex.state
    return {
        "observe": ex.scenario.observe(world) if ex.scenario.observe else None,
        "final": final_observation(world),
        "vmstat": dict(world.machine.kernel.vmstat),
        "history": [(t, k, repr(r)) for t, k, _s, _e, r in world.history],
    }


def by_explorer(name: str) -> dict[str, Any]:
    ex = Execution(lookup(name)).run(nonpreemptive)
    assert ex.failure is None, ex.failure.headline()
    assert ex.preemptions == 0
    return _outcome(ex)


class _Stuck(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Stuck("did not finish in 30 s: a retry loop that never ends in the direct "
                 "driver (which has no step limit; the linearizability check uses it too)?")


def by_direct(name: str) -> dict[str, Any]:
    ex = Execution(lookup(name))                   # the same setup and tasks
    LOCKDEP.reset()
    for task in ex.tasks:                          # each to completion, in order
        assert task.coro is not None
        direct.run(task.coro, task)
        check_exit(task)
    rcu = ex.env.rcu
    if rcu is not None:
        rcu.process()
    check = ex.scenario.check
    assert check is None or check(ex.state) is None
    return _outcome(ex)


@pytest.mark.parametrize("name", CASES)
def test_direct_driver_agrees_with_nonpreemptive_explorer(name: str) -> None:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    try:
        explored = by_explorer(name)
        ran = by_direct(name)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    for key in explored:
        assert ran[key] == explored[key], f"{key}: direct {ran[key]!r:.600} != explorer {explored[key]!r:.600}"


def test_every_race_is_covered_under_its_protocols() -> None:
    assert {f"mm.{spec.name}@{p}" for spec in SPECS for p in spec.protocols} <= set(CASES)
