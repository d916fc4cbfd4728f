"""The default portfolio: how ``specfault check --mutants`` hunts a mutant.

For each mutant, its own scenarios first (where its bug lives), then every
other scenario of its protocol; on each, three strategies in turn — a
random walk, PCT (depth 3), and exhaustive DFS bounded at two preemptions —
each for at most its slice of :data:`SLICES` schedules, until one finds a
violation or the mutant's schedule budget runs out.

Budgets are counted in schedules, never in seconds, so the kill table is
the same on every machine: the seeds are fixed (random walk and PCT use
``seed``; DFS is deterministic), and minimisation is bounded in replays.
A time cap (``cap_seconds``) can be added; a hunt it cuts short is marked
``capped`` (its outcome then depends on the machine's speed).

:data:`DEFAULT_SCHEDULES` was set from measurements; today, with seed 0,
the hungriest mutant of the kill table (``mprotect_no_flush_on_wrprotect``)
needs 10,350 schedules and every other one at most 5,124
(``specfault check --mutants --json``); ``tests/check/test_budgets.py``
keeps every mutant's need under half the default.

The kill is minimised and can be saved as a regression (one schedule line
per file) that the test suite replays.

Programs written with ``specfault.check.api`` have a portfolio of their
own, run schedule by schedule as one strategy (``strategy="portfolio"``,
``check/roundrobin.py``: PCT at several depths, a random walk, unbounded
DFS with sleep sets, taking turns; :data:`PROGRAM_PORTFOLIO`): the default
of ``check.api.find_bug`` / ``explore`` and of ``specfault check`` on a
program.  This module's mutant hunt does not use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from specfault.check.explore import ExploreConfig, Interrupted, Result, explore
from specfault.check.mutants import MUTANTS, Mutant
from specfault.check.roundrobin import PORTFOLIO
from specfault.check.scenarios import SPECS, build

#: the members of the user programs' portfolio (check/roundrobin.py)
PROGRAM_PORTFOLIO = PORTFOLIO

#: schedules per strategy on one scenario, in the order they run
SLICES = (("random", 2000), ("pct", 2000), ("dfs", 8000))
#: schedules per mutant: 2.3 times what the hungriest mutant needs
DEFAULT_SCHEDULES = 24_000


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
    #: the time cap ended the hunt before the schedule budget did
    capped: bool = False
    #: Ctrl-C ended the hunt
    interrupted: bool = False

    def verdict(self) -> str:
        if self.killed:
            return "killed"
        return "interrupted" if self.interrupted else "time cap" if self.capped else "survived"

    def to_json(self) -> dict[str, object]:
        out = {k: getattr(self, k) for k in ("mutant", "protocol", "killed", "scenario", "strategy",
                                             "schedules", "violation", "schedule", "capped",
                                             "interrupted")}
        out["seconds"] = round(self.seconds, 2)
        return out


def strategy(name: str, seed: int, schedules: int) -> ExploreConfig:
    """The portfolio's configuration of strategy ``name`` for ``schedules``."""
    if name == "random":
        return ExploreConfig(strategy="random", max_schedules=schedules, budget_seconds=None, seed=seed,
                      minimize=False)
    if name == "pct":
        return ExploreConfig(strategy="pct", max_schedules=schedules, budget_seconds=None, seed=seed,
                      pct_depth=3, minimize=False)
    return ExploreConfig(strategy="dfs", max_preemptions=2, max_schedules=schedules, budget_seconds=None,
                  minimize=False)


def scenario_order(m: Mutant) -> list[str]:
    own = list(m.scenarios)
    return own + [s.name for s in SPECS if s.name not in own and m.protocol in s.protocols]


def kill(mutant: str, schedules: float = DEFAULT_SCHEDULES, seed: int = 0, minimize: bool = True,
         cap_seconds: float | None = None) -> Kill:
    """Hunt ``mutant`` with the portfolio for at most ``schedules``
    schedules (``math.inf``: every slice of every scenario) and
    ``cap_seconds``, if given.  Ctrl-C raises
    :class:`~specfault.check.explore.Interrupted` carrying the partial Kill."""
    m = MUTANTS[mutant]
    start = time.monotonic()
    total = 0

    def partial(**kw: object) -> Kill:
        return Kill(mutant, m.protocol, False, schedules=total, seconds=time.monotonic() - start,
                    **kw)  # type: ignore[arg-type]

    spec, name = "", ""
    try:
        for spec in scenario_order(m):
            for name, slice_ in SLICES:
                left = schedules - total
                if left <= 0:
                    return partial()
                cfg = strategy(name, seed, int(min(slice_, left)))
                if cap_seconds is not None:
                    remaining = cap_seconds - (time.monotonic() - start)
                    if remaining <= 0:
                        return partial(capped=True)
                    cfg.budget_seconds = remaining
                try:
                    res = explore(build(spec, m.protocol, mutant), cfg)
                except Interrupted as exc:
                    total += exc.result.schedules
                    raise
                total += res.schedules
                if not res.ok:
                    elapsed = time.monotonic() - start
                    final = _minimised(res, spec, m, cfg) if minimize else res
                    return Kill(mutant, m.protocol, True, spec, cfg.strategy, total, elapsed,
                                res.failure.headline() if res.failure else "",
                                str(final.schedule or res.schedule or ""), final.report)
                if res.capped:
                    return partial(capped=True)
    except KeyboardInterrupt:
        raise Interrupted(partial(interrupted=True, scenario=spec, strategy=name)) from None
    return partial()


def _minimised(res: Result, spec: str, m: Mutant, cfg: ExploreConfig) -> Result:
    """Re-run the killing strategy with minimisation on (same seed: the
    same first failure), for a short, readable counterexample."""
    cfg2 = replace(cfg, minimize=True, max_schedules=res.schedules, budget_seconds=None)
    again = explore(build(spec, m.protocol, m.name), cfg2)
    return again if not again.ok else res


def save(k: Kill, directory: Path) -> Path:
    """Write the kill's schedule as ``<mutant>.schedule`` (one line)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{k.mutant}.schedule"
    path.write_text(k.schedule + "\n")
    return path
