"""The fuzz loop: generate, explore, keep what reaches new behaviour.

Programs are made in *batches* of :data:`BATCH`.  Batch ``b`` is drawn
from ``random.Random(f"{seed}:{b}")`` and the corpus as it stood before the
batch: each program is fresh (:func:`~.generate.generate`) or, once the
corpus has programs, with probability :data:`MUTATE` a mutation of one of
them (:func:`~.generate.mutate`).  The batch is explored — one
:func:`~.run.run_program` per program, a unit of a campaign
(``check/campaign.py``: in this process, in ``jobs`` worker processes, or
on Ray) — and its results merged *in program order*: a
program whose coverage has combinations not seen before joins the corpus,
and the first failing program (lowest index) ends the run.  So the same
seed gives the same programs, corpus, coverage and findings whatever
``jobs`` or the backend is.

Budgets: ``programs`` (a count: the same result on every machine) and
``seconds`` (a cap, checked between programs — between batches with
``jobs`` > 1 or Ray: how far a capped run gets depends on the machine).  Ctrl-C raises
:class:`~specfault.check.explore.Interrupted` carrying the partial
:class:`FuzzResult`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from specfault.check.campaign import PAUSE, Campaign
from specfault.check.explore import Interrupted
from specfault.check.fuzz.compile import Combo
from specfault.check.fuzz.generate import generate, mutate
from specfault.check.fuzz.program import Program
from specfault.check.fuzz.run import FuzzConfig, ProgramResult, run_unit

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


def fuzz(cfg: FuzzConfig, programs: int | None = None, seconds: float | None = None,
         jobs: int = 1, progress: Callable[[FuzzResult], None] | None = None, *,
         backend: str = "local", address: str | None = None) -> FuzzResult:
    """Run the fuzz loop (see the module doc) until a violation, the
    program budget or the time cap.  The programs are explored by a
    campaign (``check/campaign.py``): in this process (``jobs`` 1), in
    ``jobs`` local worker processes, or on Ray (``backend="ray"``, a local
    instance or the cluster at ``address``; ``jobs`` then caps the programs
    running at once) — the same result whichever, for a program budget."""
    if programs is None and seconds is None:
        raise ValueError("fuzz: give a program budget, a time cap, or both")
    out = FuzzResult(cfg)
    start = time.monotonic()
    serial = backend == "local" and jobs == 1

    def capped() -> bool:
        return seconds is not None and out.programs > 0 and time.monotonic() - start >= seconds

    def units() -> Iterator[Any]:
        """The batches, each drawn once the one before is merged."""
        b = 0
        while programs is None or out.programs < programs:
            if capped():
                out.capped = True
                return
            n = BATCH if programs is None else min(BATCH, programs - out.programs)
            for prog in batch_programs(cfg.seed, b, out.corpus, n):
                yield prog, cfg
            yield PAUSE                 # the next batch needs this one's results
            b += 1

    batch_end = 0
    try:
        with Campaign(run_unit, units(), jobs=jobs, backend=backend, address=address) as run:
            for _, res in run:     # (not handed_back: ``out`` is the partial result)
                _merge(out, res)
                if out.failure is not None:
                    break
                if out.programs >= batch_end + BATCH or out.programs == programs:
                    batch_end = out.programs
                    _batch_done(out, start, progress)
                elif serial and capped():
                    out.capped = True       # in one process, the cap cuts a batch short
                    break
            if out.programs > batch_end:     # a batch cut short (a violation, the cap)
                _batch_done(out, start, progress)
    except KeyboardInterrupt:
        out.interrupted = True
        out.elapsed = time.monotonic() - start
        raise Interrupted(out) from None
    out.elapsed = time.monotonic() - start
    return out


def _batch_done(out: FuzzResult, start: float,
                progress: Callable[[FuzzResult], None] | None) -> None:
    out.growth.append((out.programs, len(out.coverage)))
    out.elapsed = time.monotonic() - start
    if progress is not None:
        progress(out)


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
