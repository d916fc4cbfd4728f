"""``Call``: run a function atomically as one op.

For a step that changes state the op set cannot describe field by field —
freeing (poisoning) an object after an IPI round, running a callback — so
the explorer can interleave around it.  Its footprint is the wildcard
``("*", "*", "w")``: it conflicts with every other op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from specfault.runtime.ops import Op

WILDCARD: tuple[tuple[object, str, str], ...] = (("*", "*", "w"),)


class Call(Op):
    """``await Call(fn, what)`` runs ``fn()`` as one atomic step."""

    __slots__ = ("fn", "what")
    kind = "call"

    def __init__(self, fn: Callable[[], Any], what: str) -> None:
        self.fn = fn
        self.what = what

    def perform(self) -> Any:
        return self.fn()

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return WILDCARD

    def describe(self) -> str:
        return self.what
