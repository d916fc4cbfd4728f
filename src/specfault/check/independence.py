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
explorer reads the RCU state as parts (:func:`_rcu_parts`):

* ``readers`` — who is in a read-side section.  ``call_rcu`` copies it
  (a write of the whole part); the read side adds or removes *its own*
  entry, declared as a read, so two readers entering or leaving commute
  with each other but not with a ``call_rcu``.
* ``("waiting", task)`` — one part per task: the task's entry in every
  queued callback's set of readers to wait for.  A reader leaving its
  outermost section (``rcu_read_unlock``, ``local_irq_enable``) removes
  itself from every set: it writes its own part only.
* ``tail`` — the queue's order: two ``call_rcu`` s do not commute.
* ``queue`` — the callbacks taken off it: the processor and
  ``synchronize_rcu``'s wait (each removes a callback and counts a grace
  period) do not commute.
* ``("cb", n)`` — the ``n``-th callback queued (``_Callback.seq``), in mode
  :data:`HB`: an *order*, not a dependency.  Its ``call_rcu`` declares it,
  and so does every read-side exit (``rcu_read_unlock``,
  ``local_irq_enable``) of a task still in its set; the processor's step
  that runs it declares it too.  DPOR adds "every earlier step that
  declared it happens before this one" to happens-before and never takes
  such a pair for a race (which it would try to reverse); sleep sets and
  :func:`dependent` ignore the mode (the steps are independent).  Sound
  because the order holds in every execution: the callback does not exist
  before its ``call_rcu`` (as a thread's first step comes after the step
  that spawns it), and it is not ready before the exit that removes the
  last task from its set; an exit that declares it without ending the
  task's part of the grace period (a nested unlock, an unlock with
  interrupts still off) comes before the one that does in the task's
  program order, so its order is implied.  Without these orders each step
  before the ``call_rcu`` that touches what the callback frees, and each
  exit the callback waited for, looked concurrent with the callback's run,
  and each such "race" cost executions that add nothing
  (``benchmarks/dpor_table.py --profile`` counts races by the kinds of
  their steps: without the orders, ``load ↔ rcu callback`` and
  ``rcu_read_unlock ↔ rcu callback`` led on the speculative races).

The processor's step runs the oldest callback ``C`` whose set is empty: it
writes ``queue``, declares the order ``("cb", C.seq)``, reads
``("waiting", T)`` for every ``T`` still in the set of a callback queued
before ``C`` (their exits would make an older callback ready and change
which one runs), and touches what ``C`` declares.  Why a reader ``T``'s exit
that it does not read commutes with it: the exit only removes ``T`` from
sets.  The callbacks older than ``C`` stay not ready (``T`` is in none of
their sets), ``C`` stays ready, so the processor runs ``C`` in both orders;
``C``'s set no longer holds ``T`` (it is empty), so removing ``T`` before or
after running ``C`` leaves the other sets the same; and the exit's own
effect does not depend on the queue.  The footprints are also stable under
the steps they are independent of (the soundness of sleep sets and DPOR
needs that): what the processor reads changes only by an exit of a ``T``
it names (dependent), a step that takes a callback off the queue
(``queue``: dependent) or a ``call_rcu`` (which queues behind ``C``:
neither ``C`` nor the older callbacks change); which callbacks an exit
orders, and which ``n`` a ``call_rcu`` declares, change only by a
``call_rcu`` (``readers``, ``tail``: dependent) or by a ready callback
leaving the queue (the exiting task is in no ready callback's set).
``synchronize_rcu``'s wait reads the parts of the tasks its callback
waited for (``waited``; it is a blocking op: the exits that enable it are
dependent with it).  A callback being run commutes with a ``call_rcu``
and with a reader entering its section.

``rw_semaphore`` ops declare one field, ``(sem, "count")``, written by
every acquisition and release — again the simulator's cache line.  For
independence the explorer reads the semaphore as two parts
(:func:`_rwsem_parts`): ``readers`` (the count of read holders) and
``owner`` (the writer, the wait queue and the waiters' ``granted`` flags).
Incrementing or decrementing the read count is declared as a *read* of
``readers`` (two of them commute: the count is the same after both, in
either order), and every step that tests the count's value (``down_write``,
``down_write_trylock``, a release that may hand the lock on) as a write of
it.  The refinement is decided from the semaphore's state before the step:

* ``down_read`` / ``down_read_trylock`` that will take the lock at once
  (no writer, nobody queued): it reads ``owner`` (that test) and bumps
  ``readers``.  Otherwise (``down_read`` queues, the trylock fails) it
  writes (resp. reads) ``owner`` only.
* ``up_read`` with nobody queued: it reads ``owner`` (so no hand-over can
  follow) and drops ``readers``.  Its ``BadUnlock`` test reads the count,
  but its outcome does not depend on the other readers: a task that holds
  the lock for read is counted in it (so the count is positive whatever
  the other holders do), and a task that does not hold it fails either
  way.  With someone queued, it may hand the lock on: both parts written.
* every other op (``down_write``, ``up_write``, ``downgrade_write``, the
  write trylock) writes both parts; the wait for a hand-over reads
  ``owner`` (its ``granted`` flag).

Two readers taking and releasing the lock with nobody queued then commute,
as they do in the kernel; a writer's ``down_write`` is dependent with each
of them (it reads the count), and so is every step once someone queues.
The refinement is stable under the steps it is independent of: a reader's
part depends only on ``owner``, which only dependent steps write.  Subtypes
of the semaphore's ops (the broken litmus reader) keep the declared
``count``.

Soundness of the reduction rests on footprints being complete: an op must
declare everything its ``perform`` reads or writes, and everything its
``enabled`` reads.  Footprints are computed with ``STATE.task`` set to the
op's task (per-CPU state such as the TLB is found through it).
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import STATE, Yield
from specfault.sync import rcu as _rcu
from specfault.sync import rwsem as _rwsem
from specfault.sync.cpu import IrqDisable, IrqEnable

Footprint = tuple[tuple[object, str, str], ...] | None   # None: depends on everything

#: the mode of a happens-before edge that is not a dependency (see above): the
#: step declaring it later comes after the one declaring it earlier
HB = "h"

_WILD_FIELDS = ("wait", "*")

#: what each RCU op does to the RCU state, for independence (see above);
#: ``_WAITING`` stands for the op's own task's part ``("waiting", task)``
_WAITING = "waiting"
_RCU_PARTS: dict[type, tuple[tuple[str, str], ...]] = {
    _rcu._ReadLock: (("readers", "r"),),
    _rcu._ReadUnlock: (("readers", "r"), (_WAITING, "w")),
    IrqDisable: (("readers", "r"),),
    IrqEnable: (("readers", "r"), (_WAITING, "w")),
}


def _rcu_parts(op: Any, task: Any, rcu: Any) -> tuple[tuple[Any, str], ...] | None:
    """The parts of ``rcu`` that ``op`` (of ``task``) touches, or None: not
    an RCU op."""
    parts = _RCU_PARTS.get(type(op))
    if parts is not None:
        out = tuple(((_WAITING, task) if p == _WAITING else p, m) for p, m in parts)
        if type(op) is _rcu._ReadUnlock or type(op) is IrqEnable:
            # the callbacks whose grace period this step may end: their run
            # comes after it (see above)
            out += tuple((("cb", cb.seq), HB) for cb in rcu.callbacks
                         if task in cb.waiting)
        return out
    if type(op) is _rcu._CallRcu or type(op) is _rcu._KfreeRcu:
        return (("readers", "w"), ("tail", "w"), (("cb", op.rcu.queued), HB))
    if type(op) is _rcu._WaitGp:
        return (("queue", "w"), *(((_WAITING, t), "r") for t in op.cb.waited))
    return None


#: the parts of an op of another type that declares the RCU state or the
#: semaphore's count (a subtype, a mutant's op): all of them, written
_ALL = (("*", "w"),)


def _refine(fp: tuple[tuple[object, str, str], ...], op: Any, task: Any
            ) -> tuple[tuple[object, Any, str], ...]:
    """``fp`` with ``(rcu, "gp")`` and ``(rw_semaphore, "count")`` replaced by
    the parts ``op`` touches."""
    for obj, f, _ in fp:
        if (f == "gp" and isinstance(obj, _rcu.Rcu)) or (
                f == "count" and isinstance(obj, _rwsem.RwSemaphore)):
            break
    else:
        return fp
    out: list[tuple[object, Any, str]] = []
    for obj, f, m in fp:
        if f == "gp" and isinstance(obj, _rcu.Rcu):
            parts = _rcu_parts(op, task, obj) or _ALL
        elif f == "count" and isinstance(obj, _rwsem.RwSemaphore):
            parts = _rwsem_parts(op) or _ALL
        else:
            out.append((obj, f, m))
            continue
        out.extend((obj, part, mode) for part, mode in parts)
    return tuple(out)


def _rcu_processor(rcu: Any) -> Footprint:
    """The RCU processor's next step (see above): None if no callback is
    ready or the one it would run declares no footprint."""
    tasks: dict[Any, None] = {}
    for cb in rcu.callbacks:
        if not cb.waiting:
            if cb.fp is None:
                return None
            return ((rcu, "queue", "w"), (rcu, ("cb", cb.seq), HB),
                    *((rcu, (_WAITING, t), "r") for t in tasks), *cb.fp)
        tasks.update(dict.fromkeys(cb.waiting))
    return None


_BOTH = (("readers", "w"), ("owner", "w"))
_READ_FAST = (("readers", "r"), ("owner", "r"))


def _rwsem_parts(op: Any) -> tuple[tuple[str, str], ...] | None:
    """The rw_semaphore parts ``op`` touches (see above), or None: not one
    of the semaphore's own ops."""
    t = type(op)
    if t not in _RWSEM_OPS:
        return None
    sem = op.sem
    if t is _rwsem._WaitGranted:
        return (("owner", "r"),)
    free = sem.writer is None and not sem.waiters
    if t is _rwsem._DownRead:
        return _READ_FAST if free else (("owner", "w"),)
    if t is _rwsem._Trylock and not op.write:
        return _READ_FAST if free else (("owner", "r"),)
    if t is _rwsem._Up and not op.write and free:
        return _READ_FAST
    return _BOTH


_RWSEM_OPS = frozenset((_rwsem._DownRead, _rwsem._DownWrite, _rwsem._Trylock, _rwsem._WaitGranted,
                        _rwsem._Up, _rwsem._Downgrade))


def footprint_of(ex: Any, actor: int) -> Footprint:
    if actor == ex.rcu_actor:
        return _rcu_processor(ex.rcu)   # None unless the callback declares its footprint
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
        fp = _refine(fp, op, task)
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
