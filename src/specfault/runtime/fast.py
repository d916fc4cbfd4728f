"""Fast paths for the hottest ops.

In the direct driver an op object costs its construction plus a generator
for ``__await__`` (~0.5 us); a native coroutine call costs ~0.15 us.  These
helpers are coroutines that, when ``STATE.inline`` is set, do the op's work
on the spot, and otherwise await the real op object — so every other
driver still sees (and may interleave at) exactly the same op.

Use them on the fault path; everywhere else the op classes read better.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from typing import Any

from specfault.runtime.ops import KObject, LoadItem, StoreItem, Work
from specfault.runtime.state import STATE, UseAfterFree


async def load_item(owner: KObject, slots: MutableSequence[Any], index: int) -> Any:
    """``await load_item(...)``: READ_ONCE(owner->slots[index]) — see
    :class:`LoadItem`; the direct driver does the load (and its
    use-after-free check) on the spot, every other driver gets the op."""
    if STATE.inline:
        if owner.freed_at is not None:
            raise UseAfterFree(owner, owner.freed_at, f"load [{index}]")
        return slots[index]
    return await LoadItem(owner, slots, index)


class _Done(tuple):  # type: ignore[type-arg]
    """An awaitable that is already complete with the value None: awaiting
    it runs no Python frame at all (``tuple.__iter__`` of an empty tuple
    stops at once).  What inline fast paths of None-valued ops return."""

    __slots__ = ()
    __await__ = tuple.__iter__


DONE: Any = _Done()


def store_item(owner: KObject, slots: MutableSequence[Any], index: int, value: Any) -> Any:
    """``await store_item(...)``: WRITE_ONCE(owner->slots[index], value) —
    see :class:`StoreItem`; done on the spot in the direct driver."""
    if STATE.inline:
        if owner.freed_at is not None:
            raise UseAfterFree(owner, owner.freed_at, f"store [{index}]")
        slots[index] = value
        return DONE
    return StoreItem(owner, slots, index, value)


def work(what: str, amount: int = 1) -> Any:
    """``await work(...)``: CPU work — see :class:`Work`; nothing to do in
    the direct driver."""
    if STATE.inline:
        return DONE
    return Work(what, amount)
