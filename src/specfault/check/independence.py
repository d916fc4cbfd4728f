"""When do two steps commute?  From the ops' declared footprints.

Two ops are *dependent* when they touch the same ``(object, field)`` and at
least one writes it.  The field ``"wait"`` or ``"*"`` stands for every field
of its object (``WaitUntil`` declares the objects its predicate reads that
way); the object ``"*"`` stands for everything (``runtime.call.Call``).  A
blocking op that declares nothing is dependent on every step, and so is
the RCU callback processor's step unless the callback it runs next
declared its footprint (``Rcu.call_rcu(fn, what, footprint)``; ``kfree_rcu``
declares the object it frees): then the step touches the RCU state and
that footprint.

Two things the engine adds to what the ops declare, because its scheduler
reads them (``check/engine.py``):

* a ``Yield`` is dependent on every step: the fairness rule makes the
  yielding task unrunnable until *another* actor has taken a step, so the
  step after a ``Yield`` decides who may run (the scheduler's "who yielded
  last" is written by every step, and read by the yielder's enabledness);
* with fewer CPUs than tasks, a task is runnable only if the task holding
  its CPU can be preempted, which only that CPU's tasks change: every step
  of a task then also writes ``(its CPU, "run")``, so the steps of tasks
  that share a CPU are dependent.

Soundness of the reduction rests on footprints being complete: an op must
declare everything its ``perform`` reads or writes, and everything its
``enabled`` reads.  Footprints are computed with ``STATE.task`` set to the
op's task (per-CPU state such as the TLB is found through it).
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import STATE, Yield

Footprint = tuple[tuple[object, str, str], ...] | None   # None: depends on everything

_WILD_FIELDS = ("wait", "*")


def footprint_of(ex: Any, actor: int) -> Footprint:
    if actor == ex.rcu_actor:
        return ex.rcu.next_footprint()    # None unless the callback declares its footprint
    task = ex.tasks[actor]
    op = task.pending
    if type(op) is Yield:
        return None
    saved = STATE.task
    STATE.task = task
    try:
        fp = op.footprint()
    finally:
        STATE.task = saved
    if not fp:
        if op.blocking:
            return None
        fp = ()
    else:
        for obj, _, _ in fp:
            if isinstance(obj, str) and obj == "*":
                return None
    if ex.shared_cpus:
        fp = (*fp, (task.cpu, "run", "w"))
    return fp


def dependent(a: Footprint, b: Footprint) -> bool:
    if a is None or b is None:
        return True
    for o1, f1, m1 in a:
        for o2, f2, m2 in b:
            if o1 is o2 and (m1 == "w" or m2 == "w") and (
                    f1 == f2 or f1 in _WILD_FIELDS or f2 in _WILD_FIELDS):
                return True
    return False
