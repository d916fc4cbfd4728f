"""The explorer's entry point: ``explore(scenario, config) -> Result``.

Runs executions of ``scenario`` under the configured strategy until a
failure (minimised, reported), the strategy is exhausted (exhaustive DFS),
the schedule budget (``max_schedules``) is spent, or the time cap
(``budget_seconds``) is reached.  Given the same schedule budget, seed and
scenario, the result is the same on every machine; a time cap makes it
depend on the machine's speed (``Result.capped`` says when it cut the run).
Ctrl-C raises :class:`Interrupted`, a ``KeyboardInterrupt`` carrying the
partial result.  ``replay(scenario, schedule)`` re-runs one schedule exactly.

Every :class:`ExploreConfig` field can be set from the environment as
``SPECFAULT_CHECK_<FIELD>`` (see :meth:`ExploreConfig.from_env`) and from the
``specfault check`` command line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from specfault.check.delay import Delay
from specfault.check.dfs import Dfs
from specfault.check.dpor import Dpor
from specfault.check.engine import Execution, Failure, replay_chooser
from specfault.check.ipb import Ipb
from specfault.check.minimize import minimize
from specfault.check.pct import Pct
from specfault.check.random_walk import RandomWalk
from specfault.check.replay import Replay
from specfault.check.report import failure_report
from specfault.check.roundrobin import RoundRobin
from specfault.check.scenario import Scenario
from specfault.check.schedule import STRATEGIES, Schedule
from specfault.check.strategy import Strategy
from specfault.sync.lockdep import LOCKDEP

#: a program's (check.api) default budget when explore() is given no config
PROGRAM_SCHEDULES = 10_000


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while exploring: still a ``KeyboardInterrupt``; ``result``
    holds what was done until then (a :class:`Result` with
    ``interrupted=True``, or a caller's own partial record)."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


@dataclass
class ExploreConfig:
    """How to explore.  Every field has a safe default."""

    #: "random" (random walk), "pct" (Burckhardt et al.), "dfs" (CHESS-style
    #: exhaustive, preemption-bounded, fewest preemptions first), "ipb"
    #: (iterative preemption bounding, no upper bound unless ``max_bound``),
    #: "delay" (iterative delay bounding), "dpor" (source-set DPOR with
    #: sleep sets: exhaustive, unbounded), "portfolio" (several strategies
    #: taking turns: check/roundrobin.py), "replay" (run ``replay`` once)
    strategy: str = "dfs"
    #: wall-clock cap in seconds (None: no time limit); when it cuts a run
    #: short, the result depends on the machine's speed (Result.capped)
    budget_seconds: float | None = 10.0
    #: stop after this many schedules (None: no count limit)
    max_schedules: int | None = None
    #: dfs: at most this many preemptions per schedule (None: unbounded)
    max_preemptions: int | None = 2
    #: dfs: "auto" (sleep sets when unbounded), "sleep", or "none"
    reduction: str = "auto"
    #: ipb/delay: the largest bound (preemptions, delays) to explore (None:
    #: every bound, until the space is exhausted or the budget ends it)
    max_bound: int | None = None
    #: random/pct: seed of the first schedule (schedule i uses seed + i)
    seed: int = 0
    #: pct: bug depth d (d-1 priority change points per schedule)
    pct_depth: int = 3
    #: a schedule longer than this is reported as livelock
    step_limit: int = 10_000
    #: shrink a failing schedule before reporting it
    minimize: bool = True
    #: minimisation budget: replays, and a time cap (None: none, so the
    #: minimised schedule is the same on every machine)
    minimize_runs: int = 400
    minimize_seconds: float | None = None
    #: stop at the first failure (else count failures and go on)
    stop_on_failure: bool = True
    #: collect ``scenario.observe(state)`` of every complete execution
    observe: bool = False
    #: strategy "replay": the schedule line to run
    replay: str | None = None
    #: run the lockdep validator (order, bad unlock, sleep in atomic)
    lockdep: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, defaults: dict[str, Any] | None = None,
                 **overrides: Any) -> ExploreConfig:
        """Defaults (the class's, then ``defaults``), then
        ``SPECFAULT_CHECK_<FIELD>`` variables, then overrides.  A variable
        that does not convert raises ValueError naming it."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {})
        for f in fields(cls):
            var = f"SPECFAULT_CHECK_{f.name.upper()}"
            raw = env.get(var)
            if raw is None:
                continue
            try:
                values[f.name] = _convert(f.type, raw)
            except ValueError:
                raise ValueError(f"{var}={raw!r}: expected {_kind(f.type)}") from None
        values.update(overrides)
        return cls(**values)


def _kind(kind: Any) -> str:
    kind = str(kind)
    for name, what in (("bool", "true or false"), ("int", "an integer or none"),
                       ("float", "a number or none")):
        if name in kind:
            return what
    return "a string"


def _convert(kind: Any, raw: str) -> Any:
    kind = str(kind)
    if raw.lower() in ("none", ""):
        return None
    if "bool" in kind:
        low = raw.lower()
        if low not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(raw)
        return low in ("1", "true", "yes", "on")
    if "int" in kind:
        return int(raw)
    if "float" in kind:
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(raw)
        return value
    return raw


@dataclass
class Result:
    """What an exploration found."""

    scenario: str
    strategy: str
    ok: bool
    #: executions run (complete + abandoned by reduction)
    schedules: int
    #: executions that ran to the end
    complete: int
    #: executions abandoned as equivalent to one already run (sleep sets)
    pruned: int
    steps: int
    elapsed: float
    #: the strategy covered its whole scope (exhaustive dfs finished)
    exhausted: bool
    failure: Failure | None = None
    failures: int = 0
    #: the (minimised) failing schedule, and the one first found
    schedule: Schedule | None = None
    original: Schedule | None = None
    trace: list[str] = field(default_factory=list)
    report: str = ""
    observations: set[Hashable] = field(default_factory=set)
    execution: Execution | None = None
    #: the time cap (budget_seconds) ended the run before the schedule budget
    capped: bool = False
    #: Ctrl-C ended the run (see Interrupted)
    interrupted: bool = False

    def rate(self) -> float:
        return self.schedules / self.elapsed if self.elapsed > 0 else float("inf")

    def summary(self) -> str:
        verdict = ("no violation so far" if self.ok and self.interrupted else "OK" if self.ok
                   else f"FAIL ({self.failure.kind if self.failure else '?'})")
        scope = ("exhaustive" if self.exhausted else "interrupted" if self.interrupted
                 else "time cap" if self.capped
                 else "first failure" if self.failures == 1 else "schedule budget")
        return (f"{self.scenario}: {verdict} — {self.strategy}, {self.schedules} schedules "
                f"({self.complete} complete, {self.pruned} pruned), {self.steps} steps, "
                f"{self.elapsed:.2f}s ({self.rate():.0f}/s), {scope}")

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "strategy": self.strategy, "ok": self.ok,
            "schedules": self.schedules, "complete": self.complete, "pruned": self.pruned,
            "steps": self.steps, "elapsed": round(self.elapsed, 4), "exhausted": self.exhausted,
            "capped": self.capped, "interrupted": self.interrupted,
            "failures": self.failures,
            "failure": None if self.failure is None else {
                "kind": self.failure.kind, "message": self.failure.message,
                "step": self.failure.step, "site": self.failure.site},
            "schedule": None if self.schedule is None else str(self.schedule),
            "replay": None if self.schedule is None else self.schedule.replay_command(),
            "trace": self.trace,
        }


def make_strategy(cfg: ExploreConfig) -> Strategy:
    if cfg.strategy == "random":
        return RandomWalk(cfg.seed)
    if cfg.strategy == "pct":
        return Pct(cfg.seed, cfg.pct_depth)
    if cfg.strategy == "dfs":
        return Dfs(cfg.max_preemptions, cfg.reduction)
    if cfg.strategy == "ipb":
        return Ipb(cfg.max_bound)
    if cfg.strategy == "delay":
        return Delay(cfg.max_bound)
    if cfg.strategy == "dpor":
        return Dpor()
    if cfg.strategy == "portfolio":
        return RoundRobin(cfg.seed)
    if cfg.strategy == "replay":
        if cfg.replay is None:
            raise ValueError("strategy 'replay' needs config.replay (a schedule line)")
        return Replay(Schedule.parse(cfg.replay))
    raise ValueError(f"unknown strategy {cfg.strategy!r}; choose from {', '.join(STRATEGIES)}")


def explore(scenario: Scenario, config: ExploreConfig | None = None, *, search: Strategy | None = None,
            **overrides: Any) -> Result:
    """Explore ``scenario``; see :class:`ExploreConfig` for the knobs (also
    accepted as keyword arguments).  A program written with
    ``specfault.check.api`` given no config runs under the portfolio for
    :data:`PROGRAM_SCHEDULES` schedules, without a time cap, unless the
    keywords say otherwise.  ``search``: a strategy object to run instead
    of the one ``config`` names (a piece of a split search,
    ``check/split.py``)."""
    if config is None and "program" in scenario.tags:
        # a program of check.api: its defaults (the portfolio, a budget in
        # schedules, no time cap) unless the caller chose
        overrides = {"strategy": "portfolio", "max_schedules": PROGRAM_SCHEDULES,
                     "budget_seconds": None, **overrides}
    cfg = replace(config, **overrides) if config is not None else ExploreConfig(**overrides)
    strategy = make_strategy(cfg) if search is None else search
    LOCKDEP.enabled = cfg.lockdep and scenario.lockdep
    start = time.perf_counter()
    deadline = start + cfg.budget_seconds if cfg.budget_seconds is not None else None
    schedules = steps = failures = 0
    first: tuple[Execution, int] | None = None
    observations: set[Hashable] = set()
    observe = scenario.observe if cfg.observe else None
    max_n = cfg.max_schedules
    capped = False
    try:
        while True:
            if max_n is not None and schedules >= max_n:
                break
            if deadline is not None and schedules and time.perf_counter() >= deadline:
                capped = True
                break
            nxt = strategy.next()
            if nxt is None:
                break
            seed, chooser = nxt
            ex = Execution(scenario, cfg.step_limit).run(chooser)
            strategy.done_with(ex)
            schedules += 1
            steps += ex.steps
            if ex.failure is not None:
                failures += 1
                if first is None:
                    first = (ex, seed)
                if cfg.stop_on_failure:
                    break
            elif observe is not None and not ex.pruned:
                observations.add(observe(ex.state))
    except KeyboardInterrupt:
        raise Interrupted(Result(scenario.name, cfg.strategy, first is None, schedules,
                                 getattr(strategy, "complete", schedules), getattr(strategy, "pruned", 0),
                                 steps, time.perf_counter() - start, False, failures=failures,
                                 interrupted=True)) from None
    elapsed = time.perf_counter() - start
    complete = getattr(strategy, "complete", schedules)
    pruned = getattr(strategy, "pruned", 0)
    res = Result(scenario.name, cfg.strategy, first is None, schedules, complete, pruned, steps,
                 elapsed, strategy.exhausted(), failures=failures, observations=observations,
                 capped=capped and not strategy.exhausted())
    if first is not None:
        conclude(res, scenario, cfg, first[0], first[1], schedules)
    return res


def conclude(res: Result, scenario: Scenario, cfg: ExploreConfig, ex: Execution, seed: int,
             schedules: int) -> None:
    """Fill ``res``'s failure fields from the first failing execution
    ``ex`` (minimised if ``cfg.minimize``), found after ``schedules``."""
    original = Schedule(scenario.name, cfg.strategy, seed, list(ex.choices))
    if cfg.minimize and cfg.strategy != "replay":
        ex, _ = minimize(scenario, ex, cfg.step_limit, cfg.minimize_runs, cfg.minimize_seconds)
    sched = Schedule(scenario.name, cfg.strategy, seed, list(ex.choices))
    res.failure = ex.failure
    res.schedule, res.original = sched, original
    res.trace = ex.trace_lines()
    res.report = failure_report(ex, sched, schedules, original)
    res.execution = ex


def replay(scenario: Scenario, schedule: str | Schedule, step_limit: int = 10_000,
           strict: bool = True) -> Execution:
    """Run ``schedule`` (a line or a :class:`Schedule`) on ``scenario``
    exactly; returns the execution (``failure``, ``trace_lines()``, ``state``)."""
    sched = Schedule.parse(schedule) if isinstance(schedule, str) else schedule
    LOCKDEP.enabled = scenario.lockdep
    return Execution(scenario, step_limit).run(replay_chooser(sched.choices, strict))
