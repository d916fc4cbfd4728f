"""Run programs on both sides, judge them, shrink divergences: the oracle's engine.

``Oracle.check(prog)`` -> Outcome (verdict + both records).
``campaign(...)`` runs many random programs (optionally in parallel worker
processes, each with its own host coordinator), deterministic per
(seed, run index): run i uses ``random.Random(f"{seed}:{i}")``.  Work is
handed to the workers a few runs at a time (memory stays bounded however
many runs), and workers ignore Ctrl-C: the caller's KeyboardInterrupt (or
closing the generator) terminates them at once.
"""

from __future__ import annotations

import random
import signal
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ProcessPoolExecutor
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
    remeasured: int = 0        # host runs taken again (swap counters disturbed: Oracle.check)


#: swap mode: how many more host runs a program gets whose first divergence
#: is a swap counter the host has more of than the model (see _disturbed)
REMEASURE = 2


def _disturbed(v: Verdict) -> bool:
    """Could ``v`` be another process's swapping?  Its first divergence is
    the system-wide swap counters, each at least the model's on the host."""
    d = v.divergence
    if v.status != "diverge" or d is None or d.what != "counters" or not d.host or not d.model:
        return False
    return (d.host["majflt"] == d.model["majflt"]
            and all(d.host[k] >= d.model[k] for k in ("pswpin", "pswpout")))


class Oracle:
    """Both sides and the judge, for one process."""

    def __init__(self, host: HostRunner | None = None, machine_factory: Callable[[], Any] | None = None,
                 known: list[KnownDifference] | None = None, swap_pages: int = 0) -> None:
        """``swap_pages`` (--swap): the host has a swap file of that many
        pages on (the caller's hostswap.HostSwap), the model a swap
        device as large, and both record every step's counters."""
        self.host = host or HostRunner(swap=bool(swap_pages))
        self.machine_factory = machine_factory
        self.known = KNOWN_DIFFERENCES if known is None else known
        self.swap_pages = swap_pages

    def check(self, prog: Program, host_record: dict[str, Any] | None = None) -> Outcome:
        host = host_record if host_record is not None else self.host.run(prog)
        model = run_model(prog, self.machine_factory, self.swap_pages)
        verdict = judge(prog, host, model, self.known)
        remeasured = 0
        while (host_record is None and remeasured < REMEASURE and _disturbed(verdict)):
            # pswpin/pswpout are system-wide: swapping by a process outside
            # the host-swap lock adds to them (never takes away).  Only a
            # divergence every host run shows counts.
            remeasured += 1
            host = self.host.run(prog)
            verdict = judge(prog, host, model, self.known)
        return Outcome(prog, verdict, host, model, remeasured=remeasured)

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

    def abort(self) -> None:
        """Stop at once (Ctrl-C): kill the host coordinator, do not wait for it."""
        self.host.abort()


def program_for(seed: int, run: int, max_steps: int, region: int, swap: bool = False) -> Program:
    return random_program(random.Random(f"{seed}:{run}"), max_steps=max_steps, region=region,
                          swap=swap)


# ---- parallel workers ----
_worker_oracle: Oracle | None = None


def _init_worker() -> None:
    global _worker_oracle
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the parent handles Ctrl-C
    _worker_oracle = Oracle()


def _check_run(args: tuple[int, int, int, int]) -> Outcome:
    seed, run, max_steps, region = args
    assert _worker_oracle is not None
    out = _worker_oracle.check(program_for(seed, run, max_steps, region))
    out.run = run
    return out


def campaign(runs: int, seed: int, max_steps: int = 30, region: int = 64, jobs: int = 1,
             oracle: Oracle | None = None, swap_pages: int = 0) -> Generator[Outcome, None, None]:
    """Yield the outcome of each run, in run order.  ``swap_pages``: swap
    mode (one job: the host's swap counters are system-wide)."""
    work = ((seed, i, max_steps, region) for i in range(runs))
    if swap_pages and jobs > 1:
        raise ValueError("campaign: swap mode runs one job (host swap counters are system-wide)")
    if jobs <= 1:
        own = oracle or Oracle(swap_pages=swap_pages)
        try:
            for seed_, i, k, r in work:
                out = own.check(program_for(seed_, i, k, r, swap=bool(swap_pages)))
                out.run = i
                yield out
        except BaseException:   # Ctrl-C or the caller closed us: do not wait for the host
            if oracle is None:
                own.abort()
            raise
        finally:
            if oracle is None:
                own.close()
        return
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker)
    pending: deque[Future[Outcome]] = deque()
    todo = iter(work)
    try:
        while True:
            while len(pending) < 4 * jobs:
                nxt = next(todo, None)
                if nxt is None:
                    break
                pending.append(pool.submit(_check_run, nxt))
            if not pending:
                break
            yield pending.popleft().result()
    except BaseException:       # Ctrl-C, the caller closed us, or a worker failed
        _terminate(pool)
        raise
    pool.shutdown(wait=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` now: cancel what has not started, kill the workers."""
    stop = getattr(pool, "terminate_workers", None)     # Python >= 3.14
    if stop is not None:
        stop()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.kill()
