"""The fuzz loop: generate, explore, keep what reaches new behaviour.

Programs are made in *batches* of :data:`BATCH`.  Batch ``b`` is drawn
from ``random.Random(f"{seed}:{b}")`` and the corpus as it stood before the
batch: each program is fresh (:func:`~.generate.generate`) or, once the
corpus has programs, with probability :data:`MUTATE` a mutation of one of
them (:func:`~.generate.mutate`).  The batch is explored — one
:func:`~.run.run_program` per program, in this process or farmed out to
``jobs`` worker processes — and its results merged *in program order*: a
program whose coverage has combinations not seen before joins the corpus,
and the first failing program (lowest index) ends the run.  So the same
seed gives the same programs, corpus, coverage and findings whatever
``jobs`` is.

Budgets: ``programs`` (a count: the same result on every machine) and
``seconds`` (a cap, checked between programs — between batches with
``jobs`` > 1: how far a capped run gets depends on the machine).  Ctrl-C raises
:class:`~specfault.check.explore.Interrupted` carrying the partial
:class:`FuzzResult`.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from specfault.check.explore import Interrupted
from specfault.check.fuzz.compile import Combo
from specfault.check.fuzz.generate import generate, mutate
from specfault.check.fuzz.program import Program
from specfault.check.fuzz.run import FuzzConfig, ProgramResult, run_program

#: programs per batch (fixed: the merge order, hence the result, must not
#: depend on --jobs)
BATCH = 8
#: chance that a program is a mutation of a corpus program (once there is one)
MUTATE = 0.7
#: the corpus keeps at most this many programs (the newest replace the oldest)
MAX_CORPUS = 2000


@dataclass
class FuzzResult:
    config: FuzzConfig
    programs: int = 0
    schedules: int = 0
    coverage: set[Combo] = field(default_factory=set)
    corpus: list[Program] = field(default_factory=list)
    #: (programs run, coverage combinations) after each batch
    growth: list[tuple[int, int]] = field(default_factory=list)
    failure: ProgramResult | None = None
    #: index (0-based) of the failing program
    failure_index: int = -1
    elapsed: float = 0.0
    capped: bool = False
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    def stop_reason(self) -> str:
        return ("violation" if self.failure else "interrupted" if self.interrupted
                else "time cap" if self.capped else "program budget")


def batch_programs(seed: int, b: int, corpus: list[Program], n: int) -> list[Program]:
    """The ``n`` programs of batch ``b`` (see the module doc)."""
    rng = random.Random(f"{seed}:{b}")
    out = []
    for _ in range(n):
        if corpus and rng.random() < MUTATE:
            out.append(mutate(rng, rng.choice(corpus), corpus))
        else:
            out.append(generate(rng))
    return out


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Pool:
    """``jobs`` worker processes (Ctrl-C is the parent's: the workers
    ignore it and are terminated)."""

    def __init__(self, jobs: int) -> None:
        import multiprocessing

        self.pool = multiprocessing.get_context("fork").Pool(jobs, initializer=_ignore_sigint)

    def map(self, cfg: FuzzConfig, progs: list[Program]) -> list[ProgramResult]:
        async_res = self.pool.starmap_async(run_program, [(p, cfg) for p in progs])
        while True:                      # wait in short slices: Ctrl-C is seen at once
            try:
                return async_res.get(0.2)
            except __import__("multiprocessing").TimeoutError:
                continue

    def close(self, terminate: bool) -> None:
        if terminate:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()


def fuzz(cfg: FuzzConfig, programs: int | None = None, seconds: float | None = None,
         jobs: int = 1, progress: Callable[[FuzzResult], None] | None = None) -> FuzzResult:
    """Run the fuzz loop (see the module doc) until a violation, the
    program budget or the time cap."""
    if programs is None and seconds is None:
        raise ValueError("fuzz: give a program budget, a time cap, or both")
    out = FuzzResult(cfg)
    start = time.monotonic()
    pool = _Pool(jobs) if jobs > 1 else None
    terminate = True
    try:
        b = 0
        while programs is None or out.programs < programs:
            if seconds is not None and out.programs and time.monotonic() - start >= seconds:
                out.capped = True
                break
            n = BATCH if programs is None else min(BATCH, programs - out.programs)
            progs = batch_programs(cfg.seed, b, out.corpus, n)
            results: Iterable[ProgramResult]
            if pool is not None:
                results = pool.map(cfg, progs)
            else:
                results = (run_program(p, cfg) for p in progs)
            for i, res in enumerate(results):
                _merge(out, res)
                if out.failure is not None:
                    break
                if pool is None and seconds is not None and i + 1 < len(progs) \
                        and time.monotonic() - start >= seconds:
                    out.capped = True           # in one process, the cap cuts a batch short
                    break
            out.growth.append((out.programs, len(out.coverage)))
            out.elapsed = time.monotonic() - start
            if progress is not None:
                progress(out)
            if out.failure is not None or out.capped:
                break
            b += 1
        terminate = False
    except KeyboardInterrupt:
        out.interrupted = True
        out.elapsed = time.monotonic() - start
        raise Interrupted(out) from None
    finally:
        if pool is not None:
            pool.close(terminate)
    out.elapsed = time.monotonic() - start
    return out


def _merge(out: FuzzResult, res: ProgramResult) -> None:
    out.programs += 1
    out.schedules += res.schedules
    new = [c for c in res.coverage if c not in out.coverage]
    if new:
        out.coverage.update(new)
        out.corpus.append(res.program)
        if len(out.corpus) > MAX_CORPUS:
            del out.corpus[0]
    if not res.ok and out.failure is None:
        out.failure = res
        out.failure_index = out.programs - 1


def growth_table(growth: list[tuple[int, int]], points: int = 8) -> list[tuple[int, int]]:
    """At most ``points`` of the growth curve, evenly spread, the last included."""
    if len(growth) <= points:
        return list(growth)
    step = (len(growth) - 1) / (points - 1)
    return [growth[round(i * step)] for i in range(points)]


def summary_json(out: FuzzResult) -> dict[str, Any]:
    from collections import Counter

    by_proto = Counter(c[0] for c in out.coverage)
    return {"protocols": list(out.config.protocols), "mutant": out.config.mutant,
            "seed": out.config.seed, "schedules_per_program": out.config.schedules,
            "programs": out.programs, "schedules": out.schedules,
            "coverage": len(out.coverage), "coverage_by_protocol": dict(sorted(by_proto.items())),
            "corpus": len(out.corpus), "growth": [list(g) for g in out.growth],
            "elapsed": round(out.elapsed, 2), "stopped": out.stop_reason(), "ok": out.ok,
            "capped": out.capped, "interrupted": out.interrupted}
