"""pytest helpers: state what the explorer must establish.

``assert_correct(scenario, preemptions=2)`` — correct under *every* schedule
with at most 2 preemptions (exhaustive DFS; fails if the search could not
finish within its budget).  ``assert_finds_bug(scenario)`` — the explorer
finds a violation, and its minimised schedule replays to the same failure.
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


def assert_finds_bug(scenario: Scenario, kind: str | None = None, **config: Any) -> Result:
    cfg = ExploreConfig(**{"budget_seconds": 30.0, **config})
    res = explore(scenario, cfg)
    if res.ok:
        raise AssertionError(f"{scenario.name}: no violation found ({res.summary()})")
    assert res.failure is not None and res.schedule is not None
    if kind is not None and res.failure.kind != kind:
        raise AssertionError(f"{scenario.name}: expected {kind}, found {res.failure.kind}\n{res.report}")
    again = replay(scenario, str(res.schedule))
    if again.failure is None or again.failure.kind != res.failure.kind \
            or again.trace_lines() != res.trace:
        raise AssertionError(f"{scenario.name}: minimised schedule does not replay to the same failure")
    return res
