"""RCU: read-side sections, call_rcu, synchronize_rcu and grace periods.

A *reader* is a task inside ``rcu_read_lock()``/``rcu_read_unlock()`` — or,
since Linux 4.20 folded RCU-sched into RCU, a task whose CPU has interrupts
disabled (``irqs_off_is_reader``; set it False to model the pre-4.20 world
where only explicit readers count).  A grace period started by
``call_rcu``/``synchronize_rcu`` ends only when every task that was a reader
at that moment has passed a quiescent state (left its outermost section);
readers that start later do not hold it up.

Callbacks whose grace period has ended are run by :meth:`Rcu.process`
(all of them) or :meth:`Rcu.process_one` (the oldest): the direct driver
calls ``process()`` between top-level calls; the explorer makes "run one
RCU callback" a schedulable choice, so callback timing is explored like any
other interleaving.  Objects retired with :meth:`Rcu.kfree_rcu` are poisoned
when their callback runs; a later access raises ``UseAfterFree`` naming the
site that retired the object.

Fields
------
# per task: ``Task.rcu_nesting`` (private to the task)
# protected by op atomicity (the RCU core's own locking)
    readers     tasks now in a read-side section (ordered: a dict)
    callbacks   _Callback records waiting for, or past, their grace period
    queued      callbacks queued so far (the next one's ``seq``)
    gp_completed   callbacks run so far
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from specfault.runtime import STATE, KObject, ModelBug, Op
from specfault.runtime.site import task_site
from specfault.sync.lockdep import might_sleep

#: what a callback touches, as an op's footprint (None: undeclared — anything)
CallbackFootprint = tuple[tuple[object, str, str], ...] | None


class _Callback:
    """``waiting``: the readers its grace period still waits for (each
    leaves it at its quiescent state); ``waited``: the readers it waited for
    when it was queued, and ``seq`` its number in the order of queueing
    (fixed; the explorer's independence reads both)."""

    __slots__ = ("waiting", "waited", "seq", "fn", "what", "site", "fp")

    def __init__(self, waited: tuple[Any, ...], seq: int, fn: Callable[[], None], what: str,
                 site: str, fp: CallbackFootprint = None) -> None:
        self.waited = waited
        self.seq = seq
        self.waiting = set(waited)
        self.fn = fn
        self.what = what
        self.site = site
        self.fp = fp

    def __repr__(self) -> str:
        return f"<rcu cb {self.what} waiting={len(self.waiting)}>"


class _ReadLock(Op):
    __slots__ = ("rcu", "_fp")
    kind = "rcu_read_lock"

    def __init__(self, rcu: Rcu) -> None:
        self.rcu = rcu
        self._fp = ((rcu, "gp", "r"),)     # footprint(), made once: the op is shared

    def perform(self) -> None:
        task = STATE.task
        if task is not None:
            task.rcu_nesting += 1
            if task.rcu_nesting == 1:
                self.rcu.readers[task] = None

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return self._fp

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
            raise ModelBug(f"rcu_read_unlock: {task.name} is not in a read-side section")
        task.rcu_nesting -= 1
        if task.rcu_nesting == 0 and not self.rcu.irq_reader(task):
            self.rcu.quiescent(task)

    def describe(self) -> str:
        return "rcu_read_unlock"


class _CallRcu(Op):
    __slots__ = ("rcu", "fn", "what", "fp")
    kind = "call_rcu"

    def __init__(self, rcu: Rcu, fn: Callable[[], None], what: str,
                 fp: CallbackFootprint = None) -> None:
        self.rcu = rcu
        self.fn = fn
        self.what = what
        self.fp = fp

    def perform(self) -> _Callback:
        return self.rcu.enqueue(self.fn, self.what, self.fp)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.rcu, "gp", "w"),)

    def describe(self) -> str:
        return f"call_rcu {self.what}"


class _KfreeRcu(_CallRcu):
    __slots__ = ("obj",)
    kind = "kfree_rcu"

    def __init__(self, rcu: Rcu, obj: KObject, what: str) -> None:
        super().__init__(rcu, _nop, what, ((obj, "*", "w"),))
        self.obj = obj

    def perform(self) -> _Callback:
        cb = self.rcu.enqueue(_nop, self.what, self.fp)
        obj, site = self.obj, cb.site
        cb.fn = lambda: obj.poison(site)
        return cb

    def describe(self) -> str:
        return f"kfree_rcu {self.what}"


class _WaitGp(Op):
    """synchronize_rcu(): block until the grace period of ``cb`` ended."""

    __slots__ = ("rcu", "cb")
    kind = "rcu_wait"
    blocking = True
    waits_for_gp = True

    def __init__(self, rcu: Rcu, cb: _Callback) -> None:
        self.rcu = rcu
        self.cb = cb

    def enabled(self) -> bool:
        return not self.cb.waiting

    def perform(self) -> None:
        try:
            self.rcu.callbacks.remove(self.cb)
        except ValueError:
            pass  # already run by process()
        self.rcu.gp_completed += 1

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.rcu, "gp", "w"),)

    def describe(self) -> str:
        return "synchronize_rcu wait"


def _nop() -> None:
    return None


class Rcu:
    """One RCU domain per machine.  ``await rcu.read_lock()``,
    ``await rcu.read_unlock()``, ``await rcu.call_rcu(fn, what)``,
    ``await rcu.kfree_rcu(obj, what)``, ``await rcu.synchronize_rcu()``;
    drivers call :meth:`process` / :meth:`process_one`."""

    def __init__(self, irqs_off_is_reader: bool = True) -> None:
        self.irqs_off_is_reader = irqs_off_is_reader
        self.readers: dict[Any, None] = {}
        self.callbacks: list[_Callback] = []
        self.gp_completed = 0
        self.queued = 0
        self._rl = _ReadLock(self)
        self._ru = _ReadUnlock(self)

    # -- the read side and the update side (ops) --
    def read_lock(self) -> _ReadLock:
        return self._rl

    def read_unlock(self) -> _ReadUnlock:
        return self._ru

    def call_rcu(self, fn: Callable[[], None], what: str,
                 footprint: CallbackFootprint = None) -> _CallRcu:
        """Run ``fn`` after a grace period (by the driver's RCU processing).
        ``footprint``: everything ``fn`` reads or writes, as an op's
        footprint (``(obj, "*", "w")`` for an object it frees), so the
        explorer's reductions can tell the callback from unrelated steps;
        None (the default): undeclared, dependent on every step."""
        return _CallRcu(self, fn, what, footprint)

    def kfree_rcu(self, obj: KObject, what: str) -> _KfreeRcu:
        """Poison ``obj`` after a grace period (naming the retiring site)."""
        return _KfreeRcu(self, obj, what)

    async def synchronize_rcu(self) -> None:
        """Wait for a grace period.  Sleeps: not from a reader or atomic."""
        task = STATE.task
        if task is not None:
            might_sleep(task, "synchronize_rcu()")
        cb = await _CallRcu(self, _nop, "synchronize_rcu")
        await _WaitGp(self, cb)

    # -- grace-period machinery (run inside ops, or by drivers) --
    def irq_reader(self, task: Any) -> bool:
        """Is ``task`` a reader because its CPU has interrupts off?"""
        if not self.irqs_off_is_reader:
            return False
        cpu = task.cpu
        return bool(task.irq_disabled or (cpu is not None and cpu.irq_disabled))

    def enter_irq_off(self, task: Any) -> None:
        if self.irqs_off_is_reader:
            self.readers[task] = None

    def exit_irq_off(self, task: Any) -> None:
        if self.irqs_off_is_reader and task.rcu_nesting == 0:
            self.quiescent(task)

    def enqueue(self, fn: Callable[[], None], what: str, fp: CallbackFootprint = None) -> _Callback:
        """Start a grace period for ``fn``: it waits for the current readers."""
        task = STATE.task
        site = f"{what} retired by {task.name} at {task_site(task)}" if task is not None else what
        cb = _Callback(tuple(self.readers), self.queued, fn, what, site, fp)
        self.queued += 1
        self.callbacks.append(cb)
        return cb

    def active_readers(self) -> list[Any]:
        return list(self.readers)

    def register(self, task: Any) -> None:
        """Kept for compatibility: tasks need no registration."""
        return None

    def quiescent(self, task: Any) -> None:
        """``task`` passed a quiescent state (left its outermost section)."""
        if self.readers.pop(task, 0) is None:
            for cb in self.callbacks:
                cb.waiting.discard(task)

    def ready(self) -> bool:
        """Has some callback's grace period ended?"""
        for cb in self.callbacks:
            if not cb.waiting:
                return True
        return False

    def process_one(self) -> str | None:
        """Run the oldest callback whose grace period ended; its ``what``."""
        for i, cb in enumerate(self.callbacks):
            if not cb.waiting:
                del self.callbacks[i]
                cb.fn()
                self.gp_completed += 1
                return cb.what
        return None

    def process(self) -> int:
        """Run every callback whose grace period has ended; return how many."""
        done = 0
        while self.process_one() is not None:
            done += 1
        return done
