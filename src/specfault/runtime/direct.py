"""The direct driver: run model code sequentially, ops performed inline.

With ``STATE.inline`` set (``driver.enter``), every op performs itself
inside ``__await__`` and the coroutine never suspends, so running model code
costs one ``send``.  An op that would block raises :class:`Deadlock`: in a
sequential run nobody else could ever release what it waits for.  Unlike
the other drivers it does not record a model error in the task: it raises
it to the caller, with the model's own traceback.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from specfault.runtime.state import STATE, ModelBug
from specfault.runtime.task import Task

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], task: Task) -> T:
    """Run ``coro`` to completion as ``task``; return its value or raise.

    ``driver.enter`` / ``driver.leave``, written out: every call of the API
    that faults comes through here."""
    st = STATE
    inline, current = st.inline, st.task
    st.inline = True
    st.task = task
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        st.inline = inline
        st.task = current
    coro.close()
    raise ModelBug("direct.run: an op suspended in a sequential run")
