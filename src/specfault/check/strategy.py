"""The strategy interface shared by random, pct, dfs and replay.

A strategy hands the explorer one chooser per execution (with the seed
that names it in the schedule), and hears back how the execution went.
``next()`` returns None when the strategy has nothing more to try
(exhaustive search complete, replay done).
"""

from __future__ import annotations

from typing import Protocol

from specfault.check.engine import Chooser, Execution


class Strategy(Protocol):
    name: str

    def next(self) -> tuple[int, Chooser] | None:
        """(seed, chooser) for the next execution, or None when exhausted."""
        ...

    def done_with(self, ex: Execution) -> None:
        """The execution the last chooser drove has ended."""
        ...

    def exhausted(self) -> bool:
        """True when every schedule in scope has been explored."""
        ...
