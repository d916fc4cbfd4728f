"""The direct driver: run model code sequentially, ops performed inline.

With ``STATE.inline`` set, every op performs itself inside ``__await__`` and
the coroutine never suspends, so running model code costs one ``send``.  An
op that would block raises :class:`Deadlock`: in a sequential run nobody else
could ever release what it waits for.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from specfault.runtime.state import STATE, ModelBug
from specfault.runtime.task import Task

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], task: Task) -> T:
    """Run ``coro`` to completion as ``task``; return its value or raise."""
    saved_inline, saved_task = STATE.inline, STATE.task
    STATE.inline, STATE.task = True, task
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        STATE.inline, STATE.task = saved_inline, saved_task
    coro.close()
    raise ModelBug("direct.run: an op suspended in a sequential run")
