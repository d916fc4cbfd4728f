"""Run programs on both sides, judge them, shrink divergences: the oracle's engine.

``Oracle.check(prog)`` -> Outcome (verdict + both records).
``campaign(...)`` runs many random programs (optionally in parallel worker
processes, each with its own host coordinator), deterministic per
(seed, run index): run i uses ``random.Random(f"{seed}:{i}")``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from .compare import KNOWN_DIFFERENCES, KnownDifference, Verdict, judge
from .gen import random_program
from .host import HostRunner
from .model import run_model
from .program import Program
from .shrink import shrink


@dataclass
class Outcome:
    program: Program
    verdict: Verdict
    host: dict[str, Any]
    model: dict[str, Any]
    run: int = -1


class Oracle:
    """Both sides and the judge, for one process."""

    def __init__(self, host: HostRunner | None = None, machine_factory: Callable[[], Any] | None = None,
                 known: list[KnownDifference] | None = None) -> None:
        self.host = host or HostRunner()
        self.machine_factory = machine_factory
        self.known = KNOWN_DIFFERENCES if known is None else known

    def check(self, prog: Program, host_record: dict[str, Any] | None = None) -> Outcome:
        host = host_record if host_record is not None else self.host.run(prog)
        model = run_model(prog, self.machine_factory)
        return Outcome(prog, judge(prog, host, model, self.known), host, model)

    def minimise(self, out: Outcome, budget: int = 300) -> Outcome:
        """Shrink a diverging outcome to a shortest program that still diverges the same way."""
        want = out.verdict.divergence.what if out.verdict.divergence else None

        def still(p: Program) -> bool:
            v = self.check(p).verdict
            return v.status == out.verdict.status and (
                v.divergence is not None and (v.divergence.what == want or want == "error"))

        small = shrink(out.program, still, budget)
        res = self.check(small)
        res.run = out.run
        return res

    def close(self) -> None:
        self.host.close()


def program_for(seed: int, run: int, max_steps: int, region: int) -> Program:
    return random_program(random.Random(f"{seed}:{run}"), max_steps=max_steps, region=region)


# ---- parallel workers ----
_worker_oracle: Oracle | None = None


def _init_worker() -> None:
    global _worker_oracle
    _worker_oracle = Oracle()


def _check_run(args: tuple[int, int, int, int]) -> Outcome:
    seed, run, max_steps, region = args
    assert _worker_oracle is not None
    out = _worker_oracle.check(program_for(seed, run, max_steps, region))
    out.run = run
    return out


def campaign(runs: int, seed: int, max_steps: int = 30, region: int = 64, jobs: int = 1,
             oracle: Oracle | None = None) -> Iterator[Outcome]:
    """Yield the outcome of each run, in run order."""
    work = [(seed, i, max_steps, region) for i in range(runs)]
    if jobs <= 1:
        own = oracle or Oracle()
        try:
            for seed_, i, k, r in work:
                out = own.check(program_for(seed_, i, k, r))
                out.run = i
                yield out
        finally:
            if oracle is None:
                own.close()
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker) as pool:
        yield from pool.map(_check_run, work, chunksize=4)
