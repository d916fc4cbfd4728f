"""Driver state shared by ops, and the errors the runtime itself raises.

``STATE.inline`` tells an op to perform itself on the spot (direct driver);
``STATE.task`` is the task whose code is running (lock owners, RCU readers
and per-CPU state are found through it).  Drivers save and restore both with
``driver.enter`` / ``driver.leave`` so drivers can nest (the linearizability
check runs the sequential model from inside the explorer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from specfault.runtime.task import Task


class ModelBug(Exception):
    """The model reached a state that the kernel would BUG() on."""


class Deadlock(ModelBug):
    """No task can make progress (or a sequential run would block)."""


class UseAfterFree(ModelBug):
    """An access to an object after it was freed (poisoned)."""

    def __init__(self, obj: Any, freed_at: str, access: str) -> None:
        self.obj = obj
        self.freed_at = freed_at
        self.access = access
        label = getattr(obj, "label", None)
        name = label() if callable(label) else type(obj).__name__
        task = STATE.task
        where = f" by {task.name}" if task is not None else ""
        super().__init__(f"use after free: {access} of {name}{where}; freed by {freed_at}")


class _State:
    __slots__ = ("inline", "task")

    def __init__(self) -> None:
        self.inline = True
        self.task: Task | None = None


STATE = _State()


def current() -> Task:
    """The running task (``current`` in the kernel)."""
    task = STATE.task
    if task is None:
        raise ModelBug("current(): no task is running")
    return task
