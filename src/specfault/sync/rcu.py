"""RCU: read-side sections, call_rcu and grace periods.

A grace period that starts at ``call_rcu`` ends only when every task that
was inside a read-side section at that moment has left it (passed a
quiescent state).  Callbacks whose grace period has ended are run by
:meth:`Rcu.process`, which drivers call between steps (the direct driver
after each top-level call; the explorer may schedule it as its own step).

Fields
------
# per task (``Task.rcu_nesting``, ``Task.rcu_qs``): private to the task
# protected by op atomicity
    callbacks   list of (snapshot, fn, what) waiting for their grace period
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from specfault.runtime import STATE, ModelBug, Op


class _ReadLock(Op):
    __slots__ = ("rcu",)
    kind = "rcu_read_lock"

    def __init__(self, rcu: Rcu) -> None:
        self.rcu = rcu

    def perform(self) -> None:
        task = STATE.task
        if task is not None:
            if task.rcu_nesting == 0 and task not in self.rcu.readers:
                self.rcu.readers[task] = 0
            task.rcu_nesting += 1

    def describe(self) -> str:
        return "rcu_read_lock"


class _ReadUnlock(_ReadLock):
    __slots__ = ()
    kind = "rcu_read_unlock"

    def perform(self) -> None:
        task = STATE.task
        if task is None:
            return
        if task.rcu_nesting <= 0:
            raise ModelBug(f"rcu_read_unlock: {task} is not in a read-side section")
        task.rcu_nesting -= 1
        if task.rcu_nesting == 0:
            self.rcu.quiescent(task)

    def describe(self) -> str:
        return "rcu_read_unlock"


class _CallRcu(Op):
    __slots__ = ("rcu", "fn", "what")
    kind = "call_rcu"

    def __init__(self, rcu: Rcu, fn: Callable[[], None], what: str) -> None:
        self.rcu = rcu
        self.fn = fn
        self.what = what

    def perform(self) -> None:
        self.rcu.enqueue(self.fn, self.what)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.rcu, "callbacks", "w"),)

    def describe(self) -> str:
        return f"call_rcu {self.what}"


class Rcu:
    """One RCU domain per machine."""

    def __init__(self) -> None:
        self.readers: dict[Any, int] = {}   # task -> quiescent count at last exit
        self.callbacks: list[tuple[frozenset[Any], Callable[[], None], str]] = []
        self._rl = _ReadLock(self)
        self._ru = _ReadUnlock(self)
        self.gp_completed = 0

    def read_lock(self) -> _ReadLock:
        return self._rl

    def read_unlock(self) -> _ReadUnlock:
        return self._ru

    def call_rcu(self, fn: Callable[[], None], what: str) -> _CallRcu:
        return _CallRcu(self, fn, what)

    # -- grace-period machinery (performed inside ops or by drivers) --
    def enqueue(self, fn: Callable[[], None], what: str) -> None:
        """Start a grace period for ``fn``: it waits for current readers."""
        inside = frozenset(t for t in self.active_readers())
        self.callbacks.append((inside, fn, what))

    def active_readers(self) -> list[Any]:
        return [t for t in self._tasks if t.rcu_nesting > 0]

    @property
    def _tasks(self) -> list[Any]:
        return list(self.readers)

    def register(self, task: Any) -> None:
        self.readers.setdefault(task, 0)

    def quiescent(self, task: Any) -> None:
        """``task`` left its outermost read-side section."""
        self.readers[task] = self.readers.get(task, 0) + 1
        for i, (inside, fn, what) in enumerate(self.callbacks):
            if task in inside:
                self.callbacks[i] = (inside - {task}, fn, what)

    def ready(self) -> bool:
        return any(not inside for inside, _, _ in self.callbacks)

    def process(self) -> int:
        """Run every callback whose grace period has ended; return how many."""
        done = 0
        while True:
            idx = next((i for i, (inside, _, _) in enumerate(self.callbacks) if not inside), None)
            if idx is None:
                return done
            _, fn, _ = self.callbacks.pop(idx)
            fn()
            done += 1
            self.gp_completed += 1
