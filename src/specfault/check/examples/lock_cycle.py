"""Deadlock through a cycle of three locks.

Broken: T1 takes A then B, T2 B then C, T3 C then A — no two threads
invert an order, but the three orders close a cycle: lockdep reports it
when the third edge is added; with lockdep off, the schedule where each
holds its first lock deadlocks.  Correct: T3 takes A before C (one global
order A < B < C).
"""

from specfault.check.api import Checks, Mutex, join, program, spawn


async def _run(cycle: bool) -> None:
    a, b, c = Mutex("A"), Mutex("B"), Mutex("C")

    async def both(first: Mutex, second: Mutex) -> None:
        await first.lock()
        await second.lock()
        await second.unlock()
        await first.unlock()

    pairs = [(a, b), (b, c), (c, a) if cycle else (a, c)]
    threads = [await spawn(both, x, y) for x, y in pairs]
    for t in threads:
        await join(t)


correct = program(_run, name=f"{__name__}:correct", args=(False,))
broken = program(_run, name=f"{__name__}:broken", args=(True,))
broken_no_lockdep = program(_run, name=f"{__name__}:broken_no_lockdep", args=(True,),
                            checks=Checks(lockdep=False))
