"""Tasks: a model thread's coroutine plus what the drivers need to know.

A task runs one coroutine of model code (a syscall, an access, a whole
thread program).  It belongs to a process (``mm``) and runs on a CPU.  The
task object is where per-task kernel state lives: locks held (for lockdep),
RCU read-side nesting, the interrupt-disable depth of its CPU.

Fields
------
# private to the driver running the task (see runtime/driver.py)
    coro, send, pending, done, result, error
# private to the task (its own kernel state)
    held, rcu_nesting, irq_disabled
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from specfault.runtime.ops import Op


class Task:
    __slots__ = (
        "tid", "name", "coro", "send", "mm", "cpu", "pending", "done", "result", "error",
        "held", "rcu_nesting", "irq_disabled", "steps",
    )

    def __init__(self, tid: int, name: str, coro: Coroutine[Any, Any, Any] | None = None,
                 mm: Any = None, cpu: Any = None) -> None:
        self.tid = tid
        self.name = name
        self.coro = coro
        #: ``coro.send``, bound once: the drivers resume the task at every op
        self.send: Any = coro.send if coro is not None else None
        self.mm = mm
        self.cpu = cpu
        # private to the driver
        self.pending: Op | None = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.steps = 0
        # the task's own kernel state
        self.held: list[Any] = []          # locks held, in acquisition order
        self.rcu_nesting = 0               # rcu_read_lock() depth
        self.irq_disabled = 0              # local_irq_disable() depth

    def start(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Give the task a new coroutine to run (drivers resume it with
        ``driver.advance``)."""
        self.coro = coro
        self.send = coro.send
        self.pending = None
        self.done = False
        self.result = None
        self.error = None

    def __repr__(self) -> str:
        return f"<Task {self.tid} {self.name}>"
