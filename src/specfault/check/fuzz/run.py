"""One program's exploration, and shrinking a failing one.

:func:`run_program` is the unit of work a campaign farms out: a top-level,
picklable function of plain data, ``(program, config) -> ProgramResult``.
It explores the program under each protocol of the configuration with the
default portfolio (random walk, PCT of depth 3, DFS bounded at two
preemptions, each a third of the per-program schedule budget, as
``check/portfolio.py`` does per scenario), stops at the first violation,
and returns the coverage combinations every execution reached.

:func:`shrink` makes a failing program smaller — program first (drop a
thread, the kswapd actor, an op, a setup op; no memory pressure; simpler
arguments; a smaller window or file),
each candidate kept if it still fails the same way (the failing schedule
replayed leniently first, the portfolio run again otherwise) — then its
schedule (``check/minimize.py``).  Both are bounded by counts (candidates,
schedules, replays), never by time, so they give the same result on every
machine.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from specfault.check.engine import Execution, replay_chooser
from specfault.check.explore import ExploreConfig, explore
from specfault.check.fuzz.compile import Combo, build
from specfault.check.fuzz.program import MAX_FREE, Op, Program, ProgramError, ThreadProg
from specfault.check.fuzz.vocab import PARAMS, VOCAB, Ctx
from specfault.check.minimize import minimize

#: schedules per program and protocol unless told otherwise
DEFAULT_SCHEDULES = 300


@dataclass(frozen=True)
class FuzzConfig:
    """What every program of a fuzz run is explored with."""

    protocols: tuple[str, ...]
    mutant: str | None = None
    #: schedules per program and protocol (split over the portfolio)
    schedules: int = DEFAULT_SCHEDULES
    seed: int = 0
    step_limit: int = 10_000


@dataclass
class ProgramResult:
    program: Program
    ok: bool
    schedules: int
    coverage: tuple[Combo, ...]
    protocol: str = ""
    strategy: str = ""
    kind: str = ""
    message: str = ""
    #: the failing execution's choices (as found)
    choices: list[int] = field(default_factory=list)
    elapsed: float = 0.0


def program_seed(prog: Program, seed: int) -> int:
    """The random walk's and PCT's seed for ``prog``: a function of the
    program and the run's seed only."""
    h = hashlib.sha1(f"{seed}:{prog.text()}".encode()).digest()
    return int.from_bytes(h[:4], "big")


def slices(schedules: int) -> list[tuple[str, int]]:
    """The portfolio's share of ``schedules``: random, PCT, DFS."""
    third = max(schedules // 3, 1)
    out = [("random", third), ("pct", third), ("dfs", schedules - 2 * third)]
    return [(s, n) for s, n in out if n > 0]


def strategy_config(name: str, n: int, seed: int, step_limit: int) -> ExploreConfig:
    common: dict[str, Any] = {"max_schedules": n, "budget_seconds": None, "minimize": False,
                              "step_limit": step_limit}
    if name == "random":
        return ExploreConfig(strategy="random", seed=seed, **common)
    if name == "pct":
        return ExploreConfig(strategy="pct", seed=seed, pct_depth=3, **common)
    return ExploreConfig(strategy="dfs", max_preemptions=2, **common)


def run_program(prog: Program, cfg: FuzzConfig) -> ProgramResult:
    """Explore ``prog`` under every protocol of ``cfg`` (see the module
    doc).  Deterministic: the same program and configuration give the same
    result."""
    start = time.perf_counter()
    sink: set[Combo] = set()
    total = 0
    seed = program_seed(prog, cfg.seed)
    for protocol in cfg.protocols:
        scen = build(prog, protocol, cfg.mutant, sink)
        for name, n in slices(cfg.schedules):
            res = explore(scen, strategy_config(name, n, seed, cfg.step_limit))
            total += res.schedules
            if not res.ok and res.failure is not None and res.original is not None:
                return ProgramResult(prog, False, total, tuple(sorted(sink)), protocol, name,
                                     res.failure.kind, res.failure.message,
                                     list(res.original.choices), time.perf_counter() - start)
    return ProgramResult(prog, True, total, tuple(sorted(sink)),
                         elapsed=time.perf_counter() - start)


def run_unit(unit: tuple[Program, FuzzConfig]) -> ProgramResult:
    """:func:`run_program` on one ``(program, config)`` unit (the shape a
    campaign's ``map_units(fn, units)`` farms out)."""
    return run_program(*unit)


# ------------------------------------------------------------------ shrinking
def _valid(prog: Program) -> bool:
    try:
        prog.check()
    except ProgramError:
        return False
    return True


def candidates(prog: Program) -> Iterator[Program]:
    """Smaller programs, the biggest cuts first."""
    n = len(prog.threads)
    for i in range(n):                                   # drop a thread
        if n > 1:
            yield replace(prog, threads=prog.threads[:i] + prog.threads[i + 1:])
    for i, t in enumerate(prog.threads):                 # drop an op
        for j in range(len(t.ops)):
            if len(t.ops) > 1:
                yield _thread_ops(prog, i, t.ops[:j] + t.ops[j + 1:])
    if prog.kswapd:                                      # drop the kswapd actor
        yield replace(prog, kswapd=False)
    for j in range(len(prog.setup)):                     # drop a setup op
        yield replace(prog, setup=prog.setup[:j] + prog.setup[j + 1:])
    if prog.file_pages:                                  # no file, a smaller file
        yield replace(prog, file_pages=0)
        yield replace(prog, file_pages=prog.file_pages - 1)
    if prog.free:                                        # no memory pressure, or less
        yield replace(prog, free=0, kswapd=False)
        if prog.free < MAX_FREE:
            yield replace(prog, free=prog.free + 1)
    if prog.window > 1:                                  # a smaller window
        yield replace(prog, window=prog.window - 1)
    ctx = Ctx(prog.window, prog.file_pages)
    for i, t in enumerate(prog.threads):                 # simpler arguments
        for j, op in enumerate(t.ops):
            for a, (p, v) in enumerate(zip(VOCAB[op.name].params, op.args, strict=False)):
                for s in PARAMS[p].simpler(v, ctx):
                    args = op.args[:a] + (s,) + op.args[a + 1:]
                    yield _thread_ops(prog, i, t.ops[:j] + (Op(op.name, args),) + t.ops[j + 1:])
    for j, (who, op) in enumerate(prog.setup):
        for a, (p, v) in enumerate(zip(VOCAB[op.name].params, op.args, strict=False)):
            for s in PARAMS[p].simpler(v, ctx):
                args = op.args[:a] + (s,) + op.args[a + 1:]
                yield replace(prog, setup=prog.setup[:j] + ((who, Op(op.name, args)),)
                              + prog.setup[j + 1:])


def _thread_ops(prog: Program, i: int, ops: tuple[Op, ...]) -> Program:
    threads = list(prog.threads)
    threads[i] = ThreadProg(threads[i].proc, ops)
    return replace(prog, threads=tuple(threads))


@dataclass
class Shrunk:
    program: Program
    protocol: str
    kind: str
    message: str
    choices: list[int]
    #: candidates tried, schedules explored, and steps of the program
    #: before/after (threads, ops, setup ops)
    tried: int = 0
    schedules: int = 0
    before: tuple[int, ...] = ()
    after: tuple[int, ...] = ()
    execution: Execution | None = None


def _fails(prog: Program, cfg: FuzzConfig, protocol: str, kind: str,
           choices: list[int]) -> tuple[list[int] | None, str, int]:
    """(failing choices or None, message, schedules spent): the known
    schedule replayed leniently first, then the portfolio."""
    scen = build(prog, protocol, cfg.mutant)
    ex = Execution(scen, cfg.step_limit).run(replay_chooser(choices, strict=False))
    if ex.failure is not None and ex.failure.kind == kind:
        return list(ex.choices), ex.failure.message, 1
    res = run_program(prog, replace(cfg, protocols=(protocol,)))
    if not res.ok and res.kind == kind:
        return res.choices, res.message, 1 + res.schedules
    return None, "", 1 + res.schedules


def shrink(result: ProgramResult, cfg: FuzzConfig, max_candidates: int = 300,
           minimize_runs: int = 400) -> Shrunk:
    """Shrink a failing program (see the module doc), then its schedule."""
    prog, protocol, kind = result.program, result.protocol, result.kind
    best = Shrunk(prog, protocol, kind, result.message, list(result.choices),
                  before=prog.size())
    improved = True
    while improved and best.tried < max_candidates:
        improved = False
        for cand in candidates(best.program):
            if best.tried >= max_candidates:
                break
            if not _valid(cand) or cand.size() >= best.program.size():
                continue
            best.tried += 1
            choices, message, spent = _fails(cand, cfg, protocol, kind, best.choices)
            best.schedules += spent
            if choices is not None:
                best.program, best.choices, best.message = cand, choices, message
                improved = True
                break
    # then the schedule
    scen = build(best.program, protocol, cfg.mutant)
    ex = Execution(scen, cfg.step_limit).run(replay_chooser(best.choices, strict=True))
    assert ex.failure is not None and ex.failure.kind == kind, "shrink: the failure was lost"
    ex, _ = minimize(scen, ex, cfg.step_limit, minimize_runs)
    best.choices, best.message = list(ex.choices), ex.failure.message  # type: ignore[union-attr]
    best.execution = ex
    best.after = best.program.size()
    return best
