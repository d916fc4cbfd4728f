"""Textbook concurrency bugs, written with the public checker API
(:mod:`specfault.check.api`).  Each module has a ``correct`` and a
``broken`` program (some have more variants); :data:`CASES` lists the
pairs with their thread counts and the failure the broken one shows.  They
are examples and tests at once (``tests/check/test_checker_examples.py``);
``docs/explorer.md`` ("Checking your own protocol") tables the schedules
the default portfolio needs to find each bug
(``python benchmarks/bench_checker_examples.py``).

Run one from the command line::

    specfault check specfault.check.examples.ticket:broken
    specfault check src/specfault/check/examples/ticket.py:broken
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    """A correct/broken pair of one example module."""

    module: str
    correct: str
    broken: str
    #: threads the programs spawn (besides main)
    threads: int
    #: failure kinds the broken program may show (the first is the usual)
    expect: tuple[str, ...]
    #: the correct program's schedules are few enough to verify exhaustively
    exhaustive: bool
    #: what the bug is, in a few words (the docs' table)
    bug: str

    @property
    def name(self) -> str:
        return self.module if self.broken == "broken" else f"{self.module}:{self.broken}"

    def programs(self) -> tuple[Any, Any]:
        mod = importlib.import_module(f"{__name__}.{self.module}")
        return getattr(mod, self.correct), getattr(mod, self.broken)


#: every pair, in the order of the docs' table
CASES = (
    Case("lost_update", "correct", "broken", 8, ("property",), False,
         "non-atomic counter increment"),
    Case("check_then_act", "correct", "broken", 8, ("property",), False,
         "lazy init tested and done without the lock"),
    Case("dcl", "correct", "broken", 4, ("property",), False,
         "double-checked locking publishes before initialising"),
    Case("aba", "correct", "broken", 2, ("property",), True,
         "ABA on a lock-free stack (cmpxchg on a bare pointer)"),
    Case("abba", "correct", "broken", 2, ("LockOrderViolation",), True,
         "lock-order inversion A-B / B-A"),
    Case("abba", "correct", "broken_no_lockdep", 2, ("deadlock",), True,
         "the same, lockdep off: the deadlock itself"),
    Case("lock_cycle", "correct", "broken", 3, ("LockOrderViolation",), True,
         "a cycle of three locks"),
    Case("lock_cycle", "correct", "broken_no_lockdep", 3, ("deadlock",), True,
         "the same, lockdep off: the deadlock itself"),
    Case("lost_wakeup", "correct", "broken", 2, ("deadlock",), True,
         "condition tested without the mutex: the signal comes first"),
    Case("if_not_while", "correct", "broken", 3, ("property",), True,
         "'if' instead of 'while' around a condition wait"),
    Case("barrier", "correct", "broken", 8, ("deadlock",), False,
         "barrier counts arrivals non-atomically"),
    Case("ticket", "correct", "broken", 3, ("property",), True,
         "ticket lock takes its ticket non-atomically"),
    Case("ticket", "correct8", "broken8", 8, ("property",), False,
         "the same with 8 threads"),
    Case("seqlock", "correct", "broken", 2, ("property",), True,
         "seqlock reader does not retry"),
    Case("seqlock", "correct4", "broken4", 4, ("property",), False,
         "the same, 2 writers and 2 readers"),
    Case("ring", "correct", "broken", 2, ("property",), True,
         "ring buffer 'full' test off by one"),
    Case("refcount", "correct", "broken", 3, ("UseAfterFree", "DoubleFree"), True,
         "reference taken after the count dropped to zero"),
    Case("peterson", "correct", "broken", 2, ("property",), True,
         "Peterson's lock with its two writes swapped"),
)
