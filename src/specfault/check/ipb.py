"""Iterative preemption bounding: every schedule with 0 preemptions, then 1, 2, ...

M. Musuvathi, S. Qadeer, "Iterative Context Bounding for Systematic Testing
of Multithreaded Programs", PLDI 2007 (CHESS).  A *preemption* is a switch
away from an actor that could have gone on.  The search explores every
schedule with at most ``b`` preemptions, for ``b = 0, 1, 2, ...``, each bound
exhausted before the next is started, so the bugs that need the fewest
preemptions are found first, wherever in the run the switches fall; with
no upper bound (``max_preemptions=None``) it goes on until every schedule
has been explored (``exhausted``) or the schedule budget ends it.

How (the machinery is :class:`~specfault.check.dfs.Iterative`, shared with
bounded ``dfs`` and ``delay``): bound 0 is a depth-first search; each
alternative that would cost a preemption more than the bound allows is
queued as a schedule prefix for the bound it needs; bound ``b`` then runs
the depth-first search below each prefix queued for it, in the order they
were queued.  No schedule is run twice (the schedules with ``b``
preemptions are exactly the extensions of the prefixes ending with their
``b``-th preemption).  Memory: the queued prefixes, 2 bytes a step each.

Difference from ``dfs --preemptions P``: ``dfs`` stops after bound ``P``;
``ipb`` keeps going (or stops after ``max_preemptions`` when one is set).
No sleep sets: with a bound they can lose schedules (Coons et al., OOPSLA
2013); for an unbounded reduced search use ``dpor``.
"""

from __future__ import annotations

from specfault.check.dfs import PREEMPTIONS, Iterative


class Ipb(Iterative):
    name = "ipb"

    def __init__(self, max_preemptions: int | None = None) -> None:
        super().__init__(PREEMPTIONS, max_preemptions)
