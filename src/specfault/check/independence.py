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

The RCU ops declare one field, ``(rcu, "gp")`` — the cache line the
simulator charges them for.  For independence that is too coarse: every
``rcu_read_lock`` would be dependent on every callback the RCU processor
runs, and ``call_rcu`` on all of them too, though they commute.  The
explorer reads the RCU state as three parts (:data:`_RCU_PARTS`):
``readers`` (who is in a read-side section: ``call_rcu`` copies it, the
read side adds or removes itself — its own entry, so two readers commute),
``waiting`` (the callbacks' grace periods: a reader leaving its section ends
them, the processor and ``synchronize_rcu`` consume them) and ``tail`` (the
callback queue's order: two ``call_rcu`` s do not commute).  A callback
being run then commutes with a ``call_rcu`` (the queue's oldest ready
callback is run; a new one goes behind it) and with a reader entering its
section (the callback's grace period was fixed when it was queued).

Soundness of the reduction rests on footprints being complete: an op must
declare everything its ``perform`` reads or writes, and everything its
``enabled`` reads.  Footprints are computed with ``STATE.task`` set to the
op's task (per-CPU state such as the TLB is found through it).
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import STATE, Yield
from specfault.sync import rcu as _rcu
from specfault.sync.cpu import IrqDisable, IrqEnable

Footprint = tuple[tuple[object, str, str], ...] | None   # None: depends on everything

_WILD_FIELDS = ("wait", "*")

#: what each RCU op does to the RCU state, for independence (see above); the
#: RCU processor's step is ``(rcu, "waiting", "w")`` plus its callback's footprint
_RCU_PARTS: dict[type, tuple[tuple[str, str], ...]] = {
    _rcu._ReadLock: (("readers", "r"),),
    _rcu._ReadUnlock: (("readers", "r"), ("waiting", "r")),
    _rcu._CallRcu: (("readers", "w"), ("tail", "w")),
    _rcu._KfreeRcu: (("readers", "w"), ("tail", "w")),
    _rcu._WaitGp: (("waiting", "w"),),
    IrqDisable: (("readers", "r"),),
    IrqEnable: (("readers", "r"), ("waiting", "r")),
}


def _refine_rcu(fp: tuple[tuple[object, str, str], ...], parts: tuple[tuple[str, str], ...]
                ) -> tuple[tuple[object, str, str], ...]:
    out: list[tuple[object, str, str]] = []
    for obj, f, m in fp:
        if f == "gp" and isinstance(obj, _rcu.Rcu):
            out.extend((obj, part, mode) for part, mode in parts)
        else:
            out.append((obj, f, m))
    return tuple(out)


def footprint_of(ex: Any, actor: int) -> Footprint:
    if actor == ex.rcu_actor:
        fp = ex.rcu.next_footprint()    # None unless the callback declares its footprint
        return None if fp is None else _refine_rcu(fp, (("waiting", "w"),))
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
        parts = _RCU_PARTS.get(type(op))
        if parts is not None:
            fp = _refine_rcu(fp, parts)
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
