"""Operations: the only points where a model task may be interleaved.

Why it is shaped so
-------------------
The kernel model (``mm/``, ``sync/``) is written once, as ``async def``
functions that read like the kernel's C.  Every place where another CPU could
observe or change shared state is an explicit ``await`` of an *op* object.  A
*driver* decides what happens at that point:

* the **direct driver** (``runtime.direct``) performs the op inline, without
  suspending the coroutine at all — the fast sequential path the public API
  uses;
* the **explorer** (``check/``) suspends the task at every op and chooses who
  runs next;
* the **simulator** (``sim/``) charges the op simulated time.

``Op.__await__`` checks one flag (``STATE.inline``): when it is set the op is
performed on the spot and its result returned; otherwise the op is yielded
to the driver, which calls :meth:`Op.perform` when it decides the task runs,
and sends the result back.

The op set
----------
Memory (READ_ONCE / WRITE_ONCE / atomics on one field or one slot):

=================  ========================================================
``Load``           ``getattr(obj, attr)`` — READ_ONCE of a shared field
``Store``          ``setattr(obj, attr, v)`` — WRITE_ONCE
``LoadItem``       ``seq[i]`` — READ_ONCE of a slot (a PTE, a table entry)
``StoreItem``      ``seq[i] = v`` — WRITE_ONCE of a slot (set_pte_at, ...)
``AtomicAdd``      ``obj.attr += delta``, returns the new value
``Cmpxchg``        compare-and-exchange on a field, returns the old value
=================  ========================================================

Time and blocking:

=================  ========================================================
``Work``           CPU work of a named kind (zeroing or copying a page,
                   allocating, a TLB flush's local part...).  No effect on
                   state; the simulator charges it, the explorer may
                   preempt before it.
``Yield``          an explicit preemption point (cond_resched)
``WaitUntil``      block until a predicate holds (enabled only then)
=================  ========================================================

``sync/`` adds the lock, seqcount and RCU ops as subclasses of :class:`Op`;
``mm/`` adds page allocation and TLB-flush ops.  What a driver must know of
an op beyond its :meth:`~Op.perform` is said by class attributes, never by
its ``kind`` string (which only names it in traces): ``blocking`` (has an
:meth:`~Op.enabled` condition), ``spins`` (its waiter keeps the CPU),
``waits_for_gp`` (woken by an RCU grace period), ``lockstat`` (its result is
a lock acquisition or release).  Every op may declare a
*footprint* — ``(object, field, mode)`` triples, mode ``"r"``/``"w"`` — so the
explorer can tell independent ops apart and the simulator can charge
cache-line traffic.

Freed objects
-------------
Objects that can be retired through RCU derive from :class:`KObject`; when
freed they are *poisoned* (``freed_at`` set).  Every memory op checks the
object it touches and raises :class:`UseAfterFree` naming the object, the
site that freed it and the op that touched it.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence
from typing import Any, ClassVar

from specfault.runtime.state import STATE, Deadlock, UseAfterFree

#: bumped by each write to a shared object that no op's footprint can show:
#: an object freed (poisoned) or recycled in place — possibly by the code
#: between two ops (an immediate free, a VMA reused at once).  The explorer's
#: DPOR (``check/dpor.py``) treats a task's step during which it moved as
#: dependent on every step.
UNDECLARED_WRITES = [0]


class KObject:
    """A kernel object whose lifetime the model tracks (VMA, table, node)."""

    __slots__ = ("freed_at", "__weakref__")

    def __init__(self) -> None:
        self.freed_at: str | None = None

    def poison(self, site: str) -> None:
        """Mark the object freed by ``site``; later accesses raise."""
        self.freed_at = site
        UNDECLARED_WRITES[0] += 1

    def check_live(self, what: str) -> None:
        if self.freed_at is not None:
            raise UseAfterFree(self, self.freed_at, what)


class Op:
    """One atomic step of a task.  Subclasses define :meth:`perform`."""

    __slots__ = ()
    #: does the op wait for a condition?  Only then is :meth:`enabled` called.
    blocking: ClassVar[bool] = False
    #: a blocking op whose waiter keeps its CPU busy (spin_lock, a seqcount
    #: reader waiting for an even count, csd_lock_wait); other blocking ops
    #: sleep and give the CPU away.  The simulator reads it.
    spins: ClassVar[bool] = False
    #: a blocking op that waits for an RCU grace period (synchronize_rcu):
    #: it can only be woken by the grace-period machinery, not by a change
    #: to its footprint.  The simulator reads it.
    waits_for_gp: ClassVar[bool] = False
    #: is its result a lock-statistics event (a sleeping lock's acquisition
    #: or release: see ``sync/rwsem.py``)?  The simulator times waits and
    #: holds from it.
    lockstat: ClassVar[bool] = False
    #: short name used in traces and swimlanes
    kind: ClassVar[str] = "op"

    def enabled(self) -> bool:
        """True when the op can be performed now (blocking ops only)."""
        return True

    def perform(self) -> Any:
        """Do the op atomically and return its result."""
        raise NotImplementedError

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        """The shared state the op reads or writes: (obj, field, "r"|"w")."""
        return ()

    def describe(self) -> str:
        return self.kind

    def __await__(self) -> Any:
        if STATE.inline:
            if self.blocking and not self.enabled():
                raise Deadlock(f"{self.describe()} would block in a sequential run")
            return self.perform()
        return (yield self)

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


def _name(obj: object) -> str:
    label = getattr(obj, "label", None)
    if callable(label):
        return str(label())
    return type(obj).__name__


class Load(Op):
    """READ_ONCE(obj->attr)."""

    __slots__ = ("obj", "attr")
    kind = "load"

    def __init__(self, obj: Any, attr: str) -> None:
        self.obj = obj
        self.attr = attr

    def perform(self) -> Any:
        obj = self.obj
        if isinstance(obj, KObject) and obj.freed_at is not None:
            raise UseAfterFree(obj, obj.freed_at, f"load {self.attr}")
        return getattr(obj, self.attr)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.obj, self.attr, "r"),)

    def describe(self) -> str:
        return f"load {_name(self.obj)}.{self.attr}"


class Store(Op):
    """WRITE_ONCE(obj->attr, value)."""

    __slots__ = ("obj", "attr", "value")
    kind = "store"

    def __init__(self, obj: Any, attr: str, value: Any) -> None:
        self.obj = obj
        self.attr = attr
        self.value = value

    def perform(self) -> None:
        obj = self.obj
        if isinstance(obj, KObject) and obj.freed_at is not None:
            raise UseAfterFree(obj, obj.freed_at, f"store {self.attr}")
        setattr(obj, self.attr, self.value)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.obj, self.attr, "w"),)

    def describe(self) -> str:
        return f"store {_name(self.obj)}.{self.attr}"


class LoadItem(Op):
    """READ_ONCE(owner->slots[index]); ``owner`` is checked for poison."""

    __slots__ = ("owner", "slots", "index")
    kind = "load"

    def __init__(self, owner: Any, slots: MutableSequence[Any], index: int) -> None:
        self.owner = owner
        self.slots = slots
        self.index = index

    def perform(self) -> Any:
        owner = self.owner
        if isinstance(owner, KObject) and owner.freed_at is not None:
            raise UseAfterFree(owner, owner.freed_at, f"load [{self.index}]")
        return self.slots[self.index]

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.owner, str(self.index), "r"),)

    def describe(self) -> str:
        return f"load {_name(self.owner)}[{self.index}]"


class StoreItem(Op):
    """WRITE_ONCE(owner->slots[index], value)."""

    __slots__ = ("owner", "slots", "index", "value")
    kind = "store"

    def __init__(self, owner: Any, slots: MutableSequence[Any], index: int, value: Any) -> None:
        self.owner = owner
        self.slots = slots
        self.index = index
        self.value = value

    def perform(self) -> None:
        owner = self.owner
        if isinstance(owner, KObject) and owner.freed_at is not None:
            raise UseAfterFree(owner, owner.freed_at, f"store [{self.index}]")
        self.slots[self.index] = self.value

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.owner, str(self.index), "w"),)

    def describe(self) -> str:
        return f"store {_name(self.owner)}[{self.index}]"


class AtomicAdd(Op):
    """atomic_add_return(delta, &obj->attr)."""

    __slots__ = ("obj", "attr", "delta")
    kind = "atomic"

    def __init__(self, obj: Any, attr: str, delta: int) -> None:
        self.obj = obj
        self.attr = attr
        self.delta = delta

    def perform(self) -> int:
        obj = self.obj
        if isinstance(obj, KObject) and obj.freed_at is not None:
            raise UseAfterFree(obj, obj.freed_at, f"atomic {self.attr}")
        value: int = getattr(obj, self.attr) + self.delta
        setattr(obj, self.attr, value)
        return value

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.obj, self.attr, "w"),)

    def describe(self) -> str:
        return f"atomic {_name(self.obj)}.{self.attr}{self.delta:+d}"


class Cmpxchg(Op):
    """cmpxchg(&obj->attr, old, new); returns the value found."""

    __slots__ = ("obj", "attr", "old", "new")
    kind = "cmpxchg"

    def __init__(self, obj: Any, attr: str, old: Any, new: Any) -> None:
        self.obj = obj
        self.attr = attr
        self.old = old
        self.new = new

    def perform(self) -> Any:
        obj = self.obj
        if isinstance(obj, KObject) and obj.freed_at is not None:
            raise UseAfterFree(obj, obj.freed_at, f"cmpxchg {self.attr}")
        cur = getattr(obj, self.attr)
        if cur == self.old:
            setattr(obj, self.attr, self.new)
        return cur

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.obj, self.attr, "w"),)

    def describe(self) -> str:
        return f"cmpxchg {_name(self.obj)}.{self.attr}"


class Work(Op):
    """CPU work of a named kind; ``amount`` in units of that kind."""

    __slots__ = ("what", "amount")
    kind = "work"

    def __init__(self, what: str, amount: int = 1) -> None:
        self.what = what
        self.amount = amount

    def perform(self) -> None:
        return None

    def describe(self) -> str:
        return f"work {self.what}" + (f" x{self.amount}" if self.amount != 1 else "")


class Yield(Op):
    """An explicit preemption point (cond_resched)."""

    __slots__ = ()
    kind = "yield"

    def perform(self) -> None:
        return None


class WaitUntil(Op):
    """Block until ``pred()`` is true; ``what`` names the wait for reports."""

    __slots__ = ("pred", "what", "objs")
    kind = "wait"
    blocking = True

    def __init__(self, pred: Callable[[], bool], what: str, objs: tuple[object, ...] = ()) -> None:
        self.pred = pred
        self.what = what
        self.objs = objs

    def enabled(self) -> bool:
        return bool(self.pred())

    def perform(self) -> None:
        return None

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return tuple((o, "wait", "r") for o in self.objs)

    def describe(self) -> str:
        return f"wait {self.what}"
