"""What every driver does to run model code, once.

Three drivers run the model's coroutines: the direct driver
(``runtime/direct.py``: inline, to completion), the explorer
(``check/engine.py``: one op at a time, it chooses who runs) and the
simulator (``sim/engine.py``: one op at a time, timed).  They share these
mechanisms, defined here and nowhere else:

* **switching** ``STATE``: :func:`enter` sets the inline flag and the
  running task and returns what :func:`leave` restores, so drivers nest
  (the linearizability check runs the direct driver inside the explorer);
* **advancing** a task: :func:`advance` sends a value into its coroutine
  (:func:`throw` raises an exception into it) and records what came back —
  its next op in ``task.pending``, or that it finished (:func:`finished`:
  ``done`` with ``result`` or ``error``).  Nothing the model raises
  escapes: the driver decides what a model error means;
* **closing** the coroutines of tasks that did not finish (:func:`close`),
  each with ``STATE.task`` set to it as its ``finally`` clauses expect;
* the **preemptibility** test (:func:`preemptible`): may the driver give the
  task's CPU to another task at its next op?

Written out where it happens: setting ``STATE.task`` (one attribute);
:func:`enter` / :func:`leave` in the direct driver's ``run`` (every API
call that faults goes through it); and in the simulator's per-op loop the
``send`` itself (a Python call per op costs it ~3% of its instructions,
callgrind): it hands the end of the coroutine to :func:`finished` like
:func:`advance` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from specfault.runtime.ops import Op
from specfault.runtime.state import STATE
from specfault.runtime.task import Task


def enter(inline: bool, task: Task | None) -> tuple[bool, Task | None]:
    """Run with ``STATE.inline = inline`` and ``STATE.task = task``; returns
    the previous pair, for :func:`leave`."""
    st = STATE
    saved = (st.inline, st.task)
    st.inline = inline
    st.task = task
    return saved


def leave(saved: tuple[bool, Task | None]) -> None:
    """Restore what :func:`enter` returned."""
    STATE.inline, STATE.task = saved


class switch:
    """Context manager form of :func:`enter` / :func:`leave`, for code that
    is not a driver's hot path (tests, tools)."""

    __slots__ = ("inline", "task", "saved")

    def __init__(self, inline: bool, task: Task | None) -> None:
        self.inline = inline
        self.task = task
        self.saved: tuple[bool, Task | None] = (True, None)

    def __enter__(self) -> None:
        self.saved = enter(self.inline, self.task)

    def __exit__(self, *exc: object) -> None:
        leave(self.saved)


def advance(task: Task, value: Any = None) -> Op | None:
    """Resume ``task``'s coroutine with ``value`` (the result of the op it
    awaited; None to start it).  Returns its next op (also left in
    ``task.pending``), or None when it finished: then ``task.done`` is set
    and ``task.result`` holds its value, or ``task.error`` what it raised."""
    try:
        op = task.send(value)
    except BaseException as exc:  # noqa: BLE001 - the end, or a model error
        finished(task, exc)
        return None
    task.pending = op
    return op  # type: ignore[no-any-return]


def throw(task: Task, exc: BaseException) -> Op | None:
    """Raise ``exc`` inside ``task``'s coroutine at its pending op; then as
    :func:`advance`."""
    assert task.coro is not None, "throw: task has no coroutine"
    try:
        op = task.coro.throw(exc)
    except BaseException as e:  # noqa: BLE001 - the end, or a model error
        finished(task, e)
        return None
    task.pending = op
    return op  # type: ignore[no-any-return]


def finished(task: Task, exc: BaseException) -> None:
    """``task``'s coroutine raised ``exc`` when resumed: StopIteration is its
    end (``task.result`` is the value it returned), anything else a model
    error (``task.error``; nothing the model raises escapes a driver that
    steps tasks: the driver decides what it means).  KeyboardInterrupt and
    SystemExit are re-raised: Ctrl-C is the user's, never the model's.

    A loop that resumes a task at every op and cannot afford a call per op
    (the simulator's) calls ``task.send`` itself, sets ``task.pending`` to
    what it yields, and hands what it raises here."""
    if isinstance(exc, StopIteration):
        task.done, task.result, task.pending = True, exc.value, None
    elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc                  # Ctrl-C / exit: not the model's doing
    else:
        task.done, task.error, task.pending = True, exc, None


def close(tasks: Iterable[Task]) -> None:
    """Close the coroutines of the tasks that did not finish, without
    warnings: each with ``STATE.task`` set to it (its ``finally`` clauses
    run as that task); an exception they raise is dropped (a ``finally``
    clause that awaits)."""
    st = STATE
    saved = st.task
    try:
        for task in tasks:
            coro = task.coro
            if not task.done and coro is not None:
                st.task = task
                try:
                    coro.close()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException:  # noqa: BLE001 - a finally clause awaited
                    pass
    finally:
        st.task = saved


def preemptible(task: Task, preempt_rcu: bool = False) -> bool:
    """May the driver give ``task``'s CPU to another task before its next
    op?  Not with interrupts disabled or a spinning lock held (Linux's
    preempt_count), nor inside an RCU read-side section unless
    ``preempt_rcu`` (CONFIG_PREEMPT_RCU: readers may be preempted).  The
    explorer models PREEMPT_RCU; the simulator does not."""
    if task.irq_disabled or (task.rcu_nesting and not preempt_rcu):
        return False
    for lock in task.held:
        if getattr(lock, "spinning", False):
            return False
    return True
