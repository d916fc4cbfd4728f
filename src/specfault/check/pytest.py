"""pytest helpers: state what the explorer must establish.

For any scenario (and the programs of :mod:`specfault.check.api`, which
are scenarios):

``assert_correct(scenario, preemptions=2)``
    correct under *every* schedule with at most 2 preemptions (exhaustive
    DFS; fails if the search could not finish within its budget).
    ``preemptions=None``: every schedule (sleep sets).
``assert_finds_bug(scenario, kind=None, within=None)``
    the explorer finds a violation (of ``kind``, or one of a tuple of
    kinds), and its minimised schedule replays to the same failure.  With
    ``within=N`` the default portfolio looks for it for at most N
    schedules (budgets in schedules: the same verdict on every machine).

For user programs, budgets in schedules throughout:

``assert_verified(program, max_schedules=100_000)``
    every schedule is correct: DFS without a preemption bound, with sleep
    sets (the reduction keeps every reachable state), must *finish*
    within ``max_schedules``.
``assert_no_bug(program, schedules=10_000)``
    the default portfolio finds nothing in ``schedules`` schedules (for
    programs too large to verify exhaustively).

Each returns the explorer's ``Result``; a failing assertion prints the
report (violation, swimlane, replay line).
"""

from __future__ import annotations

from typing import Any

from specfault.check.explore import ExploreConfig, Result, explore, replay
from specfault.check.scenario import Scenario


def assert_correct(scenario: Scenario, preemptions: int | None = 2, budget_seconds: float | None = 60.0,
                   **config: Any) -> Result:
    cfg = ExploreConfig(strategy=config.pop("strategy", "dfs"), max_preemptions=preemptions,
                 budget_seconds=budget_seconds, **config)
    res = explore(scenario, cfg)
    if not res.ok:
        raise AssertionError(f"{scenario.name}: explorer found a violation\n{res.report}")
    if cfg.strategy == "dfs" and cfg.max_schedules is None and not res.exhausted:
        raise AssertionError(f"{scenario.name}: search not finished within {budget_seconds}s "
                             f"({res.schedules} schedules)")
    return res


def assert_finds_bug(scenario: Scenario, kind: str | tuple[str, ...] | None = None,
                     within: int | None = None, **config: Any) -> Result:
    if within is not None:
        config = {"strategy": "portfolio", "max_schedules": within, "budget_seconds": None, **config}
    cfg = ExploreConfig(**{"budget_seconds": 30.0, **config})
    res = explore(scenario, cfg)
    if res.ok:
        raise AssertionError(f"{scenario.name}: no violation found ({res.summary()})")
    assert res.failure is not None and res.schedule is not None
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and res.failure.kind not in kinds:
        raise AssertionError(f"{scenario.name}: expected {' or '.join(kinds)}, found "
                             f"{res.failure.kind}\n{res.report}")
    again = replay(scenario, str(res.schedule))
    if again.failure is None or again.failure.kind != res.failure.kind \
            or again.trace_lines() != res.trace:
        raise AssertionError(f"{scenario.name}: minimised schedule does not replay to the same failure")
    return res


def assert_verified(program: Scenario, max_schedules: int = 100_000, **config: Any) -> Result:
    cfg = ExploreConfig(**{"strategy": "dfs", "max_preemptions": None, "reduction": "sleep",
                           "max_schedules": max_schedules, "budget_seconds": None, **config})
    res = explore(program, cfg)
    if not res.ok:
        raise AssertionError(f"{program.name}: explorer found a violation\n{res.report}")
    if not res.exhausted:
        raise AssertionError(f"{program.name}: not every schedule explored within "
                             f"{max_schedules:,} schedules ({res.summary()}); raise max_schedules "
                             f"or use assert_no_bug")
    return res


def assert_no_bug(program: Scenario, schedules: int = 10_000, **config: Any) -> Result:
    cfg = ExploreConfig(**{"strategy": "portfolio", "max_schedules": schedules,
                           "budget_seconds": None, **config})
    res = explore(program, cfg)
    if not res.ok:
        raise AssertionError(f"{program.name}: explorer found a violation\n{res.report}")
    return res
