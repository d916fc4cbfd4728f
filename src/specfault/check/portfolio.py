"""The default portfolio: how ``specfault check --mutants`` hunts a mutant.

For each mutant, its own scenarios first (where its bug lives), then every
other scenario of its protocol; on each, three strategies in turn — a
random walk, PCT (depth 3), and exhaustive DFS bounded at two preemptions —
until one finds a violation or the mutant's time budget runs out.  The
kill is minimised and can be saved as a regression (one schedule line per
file) that the test suite replays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from specfault.check.explore import ExploreConfig, Result, explore
from specfault.check.mutants import MUTANTS, Mutant
from specfault.check.scenarios import SPECS, build


@dataclass
class Kill:
    mutant: str
    protocol: str
    killed: bool
    scenario: str = ""
    strategy: str = ""
    schedules: int = 0          # schedules run until the kill (all strategies)
    seconds: float = 0.0
    violation: str = ""
    schedule: str = ""
    report: str = ""

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("mutant", "protocol", "killed", "scenario", "strategy",
                                              "schedules", "seconds", "violation", "schedule")}


def strategies(seed: int, slice_seconds: float) -> list[ExploreConfig]:
    return [
        ExploreConfig(strategy="random", max_schedules=2000, budget_seconds=slice_seconds, seed=seed,
               minimize=False),
        ExploreConfig(strategy="pct", max_schedules=2000, budget_seconds=slice_seconds, seed=seed,
               pct_depth=3, minimize=False),
        ExploreConfig(strategy="dfs", max_preemptions=2, budget_seconds=slice_seconds, minimize=False),
    ]


def scenario_order(m: Mutant) -> list[str]:
    own = list(m.scenarios)
    return own + [s.name for s in SPECS if s.name not in own and m.protocol in s.protocols]


def kill(mutant: str, budget: float = 60.0, seed: int = 0, minimize: bool = True) -> Kill:
    """Hunt ``mutant`` with the portfolio within ``budget`` seconds."""
    m = MUTANTS[mutant]
    start = time.monotonic()
    total = 0
    for spec in scenario_order(m):
        for cfg in strategies(seed, slice_seconds=min(20.0, budget / 3)):
            left = budget - (time.monotonic() - start)
            if left <= 0:
                return Kill(mutant, m.protocol, False, schedules=total,
                            seconds=time.monotonic() - start)
            cfg.budget_seconds = min(cfg.budget_seconds or left, left)
            res = explore(build(spec, m.protocol, mutant), cfg)
            total += res.schedules
            if not res.ok:
                elapsed = time.monotonic() - start
                final = _minimised(res, spec, m, cfg) if minimize else res
                return Kill(mutant, m.protocol, True, spec, cfg.strategy, total, elapsed,
                            res.failure.headline() if res.failure else "",
                            str(final.schedule or res.schedule or ""), final.report)
    return Kill(mutant, m.protocol, False, schedules=total, seconds=time.monotonic() - start)


def _minimised(res: Result, spec: str, m: Mutant, cfg: ExploreConfig) -> Result:
    """Re-run the killing strategy with minimisation on (same seed: the
    same first failure), for a short, readable counterexample."""
    cfg2 = ExploreConfig(**{**cfg.__dict__, "minimize": True,
                     "max_schedules": res.schedules, "budget_seconds": None})
    again = explore(build(spec, m.protocol, m.name), cfg2)
    return again if not again.ok else res


def save(k: Kill, directory: Path) -> Path:
    """Write the kill's schedule as ``<mutant>.schedule`` (one line)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{k.mutant}.schedule"
    path.write_text(k.schedule + "\n")
    return path
