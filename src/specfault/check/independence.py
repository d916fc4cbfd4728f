"""When do two steps commute?  From the ops' declared footprints.

Two ops are *dependent* when they touch the same ``(object, field)`` and at
least one writes it.  The field ``"wait"`` or ``"*"`` stands for every field
of its object (``WaitUntil`` declares the objects its predicate reads that
way); the object ``"*"`` stands for everything (``runtime.call.Call``).  A
blocking op that declares nothing, and the RCU callback processor (whose
callbacks may free anything), are dependent on every step.

Soundness of the reduction rests on footprints being complete: an op must
declare everything its ``perform`` reads or writes, and everything its
``enabled`` reads.  Footprints are computed with ``STATE.task`` set to the
op's task (per-CPU state such as the TLB is found through it).
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import STATE

Footprint = tuple[tuple[object, str, str], ...] | None   # None: depends on everything

_WILD_FIELDS = ("wait", "*")


def footprint_of(ex: Any, actor: int) -> Footprint:
    if actor == ex.rcu_actor:
        return None
    task = ex.tasks[actor]
    op = task.pending
    saved = STATE.task
    STATE.task = task
    try:
        fp = op.footprint()
    finally:
        STATE.task = saved
    if not fp:
        return None if op.blocking else ()
    for obj, _, _ in fp:
        if isinstance(obj, str) and obj == "*":
            return None
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
