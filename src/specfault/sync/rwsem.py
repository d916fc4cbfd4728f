"""struct rw_semaphore with Linux's fairness: a waiting writer blocks new
readers (so a stream of faults cannot starve mmap writers), and a release
hands the lock to the head of the wait queue — a writer alone, or every
queued reader at once (rwsem_mark_wake).

Used for ``mmap_lock``.  Lock order: mmap_lock is outermost in mm/.

What the ops return
-------------------
Every acquisition op says how it went, in lockstat's terms: an
:class:`Acquired` when it took the lock (``lock_acquired``: for read or
write; at once, by a trylock, or granted after queueing), the task's
:class:`Waiter` when a ``down_*`` queued (``lock_contended``), False when a
trylock failed; a release returns None (``lock_release``).  The model code
only tests which came back; the simulator reads the same result to charge a
write section's VMA work and to time waits and holds (its ops are flagged
``lockstat``), so the locking decision is made once, here.

Fields
------
# protected by the op atomicity (the rwsem's internal wait_lock)
    readers   number of read holders
    writer    task holding it for write, or None
    waiters   FIFO of Waiter records (task, mode, granted)
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import STATE, Op
from specfault.runtime.fast import DONE
from specfault.sync.lockdep import LOCKDEP, BadUnlock, default_class, might_sleep


class Acquired:
    """The result of an acquisition op that took the lock: ``write`` (else
    read) and ``how`` (:data:`AT_ONCE`, :data:`BY_TRYLOCK`, or
    :data:`GRANTED` after queueing).  One instance per pair, made below."""

    __slots__ = ("write", "how")

    def __init__(self, write: bool, how: int) -> None:
        self.write = write
        self.how = how

    def __repr__(self) -> str:
        return f"<Acquired {'write' if self.write else 'read'} {_HOW[self.how]}>"


#: Acquired.how: the down_* found the lock free / a trylock took it / the
#: releaser handed it to the queued waiter (rwsem_mark_wake)
AT_ONCE, BY_TRYLOCK, GRANTED = range(3)
_HOW = ("at once", "by trylock", "granted")
READ_AT_ONCE, WRITE_AT_ONCE = Acquired(False, AT_ONCE), Acquired(True, AT_ONCE)
READ_BY_TRYLOCK, WRITE_BY_TRYLOCK = Acquired(False, BY_TRYLOCK), Acquired(True, BY_TRYLOCK)
READ_GRANTED, WRITE_GRANTED = Acquired(False, GRANTED), Acquired(True, GRANTED)


class Waiter:
    """A task queued on the rwsem (what a ``down_*`` that queued returns);
    ``granted`` is set by the releaser that hands it the lock."""

    __slots__ = ("task", "write", "granted")

    def __init__(self, task: Any, write: bool) -> None:
        self.task = task
        self.write = write
        self.granted = False


class _DownRead(Op):
    """Fast path of down_read: take it (:data:`READ_AT_ONCE`), or queue and
    return the waiter."""

    __slots__ = ("sem",)
    kind = "down_read"
    lockstat = True

    def __init__(self, sem: RwSemaphore) -> None:
        self.sem = sem

    def perform(self) -> Acquired | Waiter:
        sem = self.sem
        task = STATE.task
        # might_sleep() and lockdep, called only when the task holds a lock
        # or may be atomic (might_sleep's own first test, written out: the
        # uncontended fault path, which holds nothing, makes no call)
        if task is not None and (task.held or task.rcu_nesting or task.irq_disabled
                                 or getattr(task.cpu, "irq_disabled", 0)):
            might_sleep(task, "down_read", sem)
            if task.held:
                LOCKDEP.acquire(task, sem)
        if sem.writer is None and not sem.waiters:
            sem.readers += 1
            if task is not None:
                task.held.append(sem)
            return READ_AT_ONCE
        w = Waiter(task, False)
        sem.waiters.append(w)
        return w

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.sem, "count", "w"),)

    def describe(self) -> str:
        return f"down_read {self.sem.name}"


class _DownWrite(_DownRead):
    __slots__ = ()
    kind = "down_write"

    def perform(self) -> Acquired | Waiter:
        sem = self.sem
        task = STATE.task
        if task is not None:
            might_sleep(task, "down_write", sem)
            if task.held:
                LOCKDEP.acquire(task, sem)
        if sem.writer is None and sem.readers == 0 and not sem.waiters:
            sem.writer = task
            if task is not None:
                task.held.append(sem)
            return WRITE_AT_ONCE
        w = Waiter(task, True)
        sem.waiters.append(w)
        return w

    def describe(self) -> str:
        return f"down_write {self.sem.name}"


class _Trylock(_DownRead):
    __slots__ = ("write",)
    kind = "down_trylock"

    def __init__(self, sem: RwSemaphore, write: bool) -> None:
        super().__init__(sem)
        self.write = write

    def perform(self) -> Acquired | bool:  # type: ignore[override]
        sem = self.sem
        task = STATE.task
        if sem.writer is not None or sem.waiters or (self.write and sem.readers):
            return False
        if self.write:
            sem.writer = task
        else:
            sem.readers += 1
        if task is not None:
            task.held.append(sem)
        return WRITE_BY_TRYLOCK if self.write else READ_BY_TRYLOCK

    def describe(self) -> str:
        return f"down_{'write' if self.write else 'read'}_trylock {self.sem.name}"


class _WaitGranted(Op):
    """Sleep until the releaser handed us the lock; then it is ours
    (:data:`READ_GRANTED` / :data:`WRITE_GRANTED`)."""

    __slots__ = ("sem", "waiter")
    kind = "rwsem_wait"
    blocking = True
    lockstat = True

    def __init__(self, sem: RwSemaphore, waiter: Waiter) -> None:
        self.sem = sem
        self.waiter = waiter

    def enabled(self) -> bool:
        return self.waiter.granted

    def perform(self) -> Acquired:
        task = STATE.task
        if task is not None:
            task.held.append(self.sem)
        return WRITE_GRANTED if self.waiter.write else READ_GRANTED

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.sem, "count", "r"),)

    def describe(self) -> str:
        return f"wait {'write' if self.waiter.write else 'read'} {self.sem.name}"


class _Up(Op):
    """up_read / up_write: release, and hand the lock on if it is free."""

    __slots__ = ("sem", "write")
    kind = "up"
    lockstat = True

    def __init__(self, sem: RwSemaphore, write: bool) -> None:
        self.sem = sem
        self.write = write

    def perform(self) -> None:
        sem = self.sem
        task = STATE.task
        if self.write:
            if sem.writer is not task:
                raise BadUnlock(f"up_write({sem.name}): not held for write by {task}")
            sem.writer = None
            if task is not None:
                task.held.remove(sem)
        else:
            if sem.readers <= 0:
                raise BadUnlock(f"up_read({sem.name}): not held for read by {task}")
            if task is not None:
                try:
                    task.held.remove(sem)
                except ValueError:
                    raise BadUnlock(f"up_read({sem.name}): not held for read by {task}") from None
            sem.readers -= 1
        if sem.waiters and sem.readers == 0 and sem.writer is None:
            sem.wake()

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.sem, "count", "w"),)

    def describe(self) -> str:
        return f"up_{'write' if self.write else 'read'} {self.sem.name}"


class _Downgrade(Op):
    """downgrade_write: write hold -> read hold; queued readers may join."""

    __slots__ = ("sem",)
    kind = "downgrade_write"

    def __init__(self, sem: RwSemaphore) -> None:
        self.sem = sem

    def perform(self) -> None:
        sem = self.sem
        task = STATE.task
        if sem.writer is not task:
            raise BadUnlock(f"downgrade_write({sem.name}): not held for write by {task}")
        sem.writer = None
        sem.readers = 1
        if sem.waiters and not sem.waiters[0].write:
            sem.wake()

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.sem, "count", "w"),)

    def describe(self) -> str:
        return f"downgrade_write {self.sem.name}"


class RwSemaphore:
    """``await sem.down_read()`` etc.; the methods are coroutines only on the
    slow path, so the uncontended case costs one op."""

    __slots__ = ("name", "lock_class", "readers", "writer", "waiters", "_dr", "_dw", "_ur", "_uw",
                 "_trr", "_trw")
    #: a sleeping lock: holding it does not make the task atomic
    spinning = False

    def __init__(self, name: str, lock_class: str | None = None) -> None:
        self.name = name
        self.lock_class = lock_class if lock_class is not None else default_class(name)
        self.readers = 0
        self.writer: Any = None
        self.waiters: list[Waiter] = []
        self._dr = _DownRead(self)
        self._dw = _DownWrite(self)
        self._ur = _Up(self, False)
        self._uw = _Up(self, True)
        self._trr = _Trylock(self, False)
        self._trw = _Trylock(self, True)

    def wake(self) -> None:
        """Hand the free lock to the head of the queue (rwsem_mark_wake)."""
        if not self.waiters:
            return
        head = self.waiters[0]
        if head.write:
            self.waiters.pop(0)
            head.granted = True
            self.writer = head.task
            return
        keep = []
        for w in self.waiters:
            if w.write:
                keep.append(w)
            else:
                w.granted = True
                self.readers += 1
        self.waiters = keep

    def down_read(self) -> Any:
        """``await sem.down_read()``.  In the direct driver an uncontended
        acquisition is done here (an already-complete awaitable comes back);
        otherwise the coroutine that may wait is returned."""
        st = STATE
        task = st.task
        if st.inline and task is not None and self.writer is None and not self.waiters:
            if task.held or task.rcu_nesting or task.irq_disabled \
                    or getattr(task.cpu, "irq_disabled", 0):
                self._dr.perform()      # might_sleep() and lockdep have work
            else:
                # _DownRead.perform() with nothing held (a fault's first
                # lock), written out: keep the two in step
                self.readers += 1
                task.held.append(self)
            return DONE
        return self._down_read_slow()

    async def _down_read_slow(self) -> None:
        w = await self._dr
        if type(w) is Waiter:
            await _WaitGranted(self, w)

    async def down_write(self) -> None:
        w = await self._dw
        if type(w) is Waiter:
            await _WaitGranted(self, w)

    def down_read_trylock(self) -> _Trylock:
        """``await sem.down_read_trylock()``: an :class:`Acquired` (true)
        if it took the lock, else False."""
        return self._trr

    def down_write_trylock(self) -> _Trylock:
        return self._trw

    def up_read(self) -> Any:
        """``await sem.up_read()`` (done on the spot in the direct driver)."""
        st = STATE
        task = st.task
        if st.inline and task is not None:
            if self.readers > 0 and not self.waiters and task.held and task.held[-1] is self:
                # _Up.perform() of the lock taken last, nobody queued (the
                # fault's mmap_lock), written out: keep the two in step
                task.held.pop()
                self.readers -= 1
            else:
                self._ur.perform()
            return DONE
        return self._ur

    def up_write(self) -> _Up:
        return self._uw

    def downgrade_write(self) -> _Downgrade:
        return _Downgrade(self)

    def is_locked(self) -> bool:
        return self.writer is not None or self.readers > 0

    def is_write_locked(self) -> bool:
        return self.writer is not None

    def label(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<RwSemaphore {self.name} r={self.readers} w={self.writer} q={len(self.waiters)}>"
