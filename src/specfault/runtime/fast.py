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
    """READ_ONCE(owner->slots[index]) — see :class:`LoadItem`."""
    if STATE.inline:
        if owner.freed_at is not None:
            raise UseAfterFree(owner, owner.freed_at, f"load [{index}]")
        return slots[index]
    return await LoadItem(owner, slots, index)


async def store_item(owner: KObject, slots: MutableSequence[Any], index: int, value: Any) -> None:
    """WRITE_ONCE(owner->slots[index], value) — see :class:`StoreItem`."""
    if STATE.inline:
        if owner.freed_at is not None:
            raise UseAfterFree(owner, owner.freed_at, f"store [{index}]")
        slots[index] = value
        return
    await StoreItem(owner, slots, index, value)


async def work(what: str, amount: int = 1) -> None:
    """CPU work — see :class:`Work`."""
    if STATE.inline:
        return
    await Work(what, amount)
