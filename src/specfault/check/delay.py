"""Delay bounding: schedules that deviate from a round-robin scheduler at most d times.

M. Emmi, S. Qadeer, Z. Rakamarić, "Delay-Bounded Scheduling", POPL 2011.
Fix a deterministic scheduler; a *delay* skips the actor it would run next.
Exploring every schedule with at most ``d`` delays, for ``d = 0, 1, 2, ...``
(each bound exhausted before the next), finds bugs that need few
deviations; unlike a preemption bound, the number of schedules with ``d``
delays does not grow with the number of actors' choices blocked in the
meantime, and a bound of ``d`` covers every schedule of a program with
``d`` forced context switches in round-robin order.

The deterministic scheduler here is round-robin over actor numbers: keep
running the last actor while it can run; when it cannot, the next runnable
actor after it in cyclic order (tasks ``0..n-1``, then the RCU callback
processor).  At each step the runnable actors are ranked in that cyclic
order starting from the default; choosing the one at rank ``k`` costs
``k`` delays.  So switching from a running actor to the next one costs 1,
to the one after it 2; after an actor blocks or ends, taking the next one
round-robin is free (the scheduler would have done it).

The search is :class:`~specfault.check.dfs.Iterative` with that cost: a
depth-first search within the bound, each over-budget alternative queued
as a prefix for the bound it costs (``k`` delays at once may skip a bound),
each prefix of the smallest pending bound then searched in the order
queued.  No schedule is run twice; ``max_delays`` (None: none) stops it
after that bound.
"""

from __future__ import annotations

from specfault.check.dfs import Cost, Iterative


class Delays(Cost):
    """Round-robin ranks: the k-th runnable actor from the default costs k."""

    name = "delays"

    def order(self, prev: int, enabled: list[int]) -> list[int]:
        if prev in enabled:
            return [prev] + [a for a in enabled if a > prev] + [a for a in enabled if a < prev]
        return [a for a in enabled if a > prev] + [a for a in enabled if a < prev]

    def cost(self, prev: int, enabled: list[int], rank: int, actor: int) -> int:
        return rank


DELAYS = Delays()


class Delay(Iterative):
    name = "delay"

    def __init__(self, max_delays: int | None = None) -> None:
        super().__init__(DELAYS, max_delays)
