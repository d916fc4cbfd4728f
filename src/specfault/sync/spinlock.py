"""spinlock_t: mutual exclusion with an owner (the page-table lock, PTL).

Lock order (mm): mmap_lock -> vma lock -> PTL.  A task never holds two PTLs
except in copy_page_range / move_ptes (dst then src), which Linux nests with
SINGLE_DEPTH_NESTING.

The acquire/release ops are built once per lock and shared: they carry no
per-call state (the owner is the running task, ``STATE.task``).
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import STATE, Deadlock, ModelBug, Op
from specfault.runtime.fast import DONE
from specfault.sync.lockdep import LOCKDEP, BadUnlock, default_class


class SpinAcquire(Op):
    __slots__ = ("lock",)
    kind = "spin_lock"
    blocking = True
    spins = True

    def __init__(self, lock: SpinLock) -> None:
        self.lock = lock

    def enabled(self) -> bool:
        return self.lock.owner is None

    def perform(self) -> None:
        lock = self.lock
        task = STATE.task
        if lock.owner is not None:
            raise ModelBug(f"spin_lock({lock.name}): already held by {lock.owner}")
        if task is not None and task.held:
            LOCKDEP.acquire(task, lock)
        lock.owner = task
        if task is not None:
            task.held.append(lock)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.lock, "owner", "w"),)

    def describe(self) -> str:
        return f"spin_lock {self.lock.name}"


class SpinTrylock(SpinAcquire):
    __slots__ = ()
    kind = "spin_trylock"
    blocking = False
    spins = False

    def perform(self) -> bool:  # type: ignore[override]
        lock = self.lock
        if lock.owner is not None:
            return False
        # a trylock cannot deadlock: lockdep records no dependency for it
        task = STATE.task
        lock.owner = task
        if task is not None:
            task.held.append(lock)
        return True

    def describe(self) -> str:
        return f"spin_trylock {self.lock.name}"


class SpinRelease(Op):
    __slots__ = ("lock",)
    kind = "spin_unlock"

    def __init__(self, lock: SpinLock) -> None:
        self.lock = lock

    def perform(self) -> None:
        lock = self.lock
        task = STATE.task
        if lock.owner is not task:
            raise BadUnlock(f"spin_unlock({lock.name}): not held by {task} (owner {lock.owner})")
        lock.owner = None
        if task is not None:
            task.held.remove(lock)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.lock, "owner", "w"),)

    def describe(self) -> str:
        return f"spin_unlock {self.lock.name}"


class SpinLock:
    """A spinlock.  ``await lock.lock()``, ``await lock.unlock()``,
    ``ok = await lock.trylock()``.

    ``lock_class`` is the lockdep class (default: the name up to ``#`` or
    ``@``, so ``ptl@0x1000`` is of class ``ptl``): lockdep reasons about the
    order of kinds of lock, as Linux's does.
    """

    __slots__ = ("name", "owner", "lock_class", "_acq", "_try", "_rel")
    #: holding it makes the task atomic (lockdep's might_sleep check)
    spinning = True

    def __init__(self, name: str, lock_class: str | None = None) -> None:
        self.name = name
        self.lock_class = lock_class if lock_class is not None else default_class(name)
        self.owner: object | None = None  # the task holding it
        self._acq = SpinAcquire(self)
        self._try = SpinTrylock(self)
        self._rel = SpinRelease(self)

    def lock(self) -> Any:
        """``await lock.lock()``.  In the direct driver the acquisition is
        done here and an already-complete awaitable returned (no frame);
        elsewhere the op is returned for the driver to schedule."""
        st = STATE
        task = st.task
        if st.inline and task is not None:
            if self.owner is not None:
                raise Deadlock(f"spin_lock {self.name} would block in a sequential run")
            # SpinAcquire.perform() on a free lock, written out (the PTL of
            # every fault): keep the two in step
            if task.held:
                LOCKDEP.acquire(task, self)
            self.owner = task
            task.held.append(self)
            return DONE
        return self._acq

    def trylock(self) -> SpinTrylock:
        return self._try

    def unlock(self) -> Any:
        """``await lock.unlock()`` (done on the spot in the direct driver)."""
        st = STATE
        task = st.task
        if st.inline and task is not None and self.owner is task:
            # SpinRelease.perform() by the owner, written out: keep in step
            self.owner = None
            task.held.remove(self)
            return DONE
        if st.inline and task is not None:
            self._rel.perform()         # not the owner: BadUnlock
            return DONE
        return self._rel

    def is_locked(self) -> bool:
        return self.owner is not None

    def label(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<SpinLock {self.name} owner={self.owner}>"
