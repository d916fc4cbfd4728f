"""Lockdep: the runtime locking validator, reduced to what the model needs.

Like Linux's lockdep (kernel/locking/lockdep.c) it reasons about lock
*classes*, not instances: every PTL is one class ``"ptl"``, every
``mmap_lock`` one class.  Each acquisition made while other locks are held
records the edges *held class -> new class*; an acquisition that would close
a cycle in that graph is reported at once, whether or not the schedule at
hand deadlocks — an ABBA order seen in two different schedules is enough.

Checks (each a :class:`LockdepBug`, i.e. a :class:`ModelBug`):

* :class:`LockOrderViolation` — circular locking dependency;
* :class:`BadUnlock` — releasing a lock the task does not hold;
* :class:`SleepInAtomic` — a sleeping operation (rwsem acquire, waiting for
  a grace period or for IPI acknowledgements) inside an RCU read-side
  section, with interrupts off, or holding a spinlock (``might_sleep()``);
* :class:`HeldAtExit` — a task finished holding a lock, inside an RCU
  read-side section or with interrupts off (the explorer checks it).

The graph lives in :data:`LOCKDEP`; the explorer resets it at the start of
each exploration so that orders seen in one schedule inform the next.
"""

from __future__ import annotations

from typing import Any

from specfault.runtime.state import ModelBug


class LockdepBug(ModelBug):
    """A locking-rule violation found by the validator."""


class LockOrderViolation(LockdepBug):
    pass


class BadUnlock(LockdepBug):
    pass


class SleepInAtomic(LockdepBug):
    pass


class HeldAtExit(LockdepBug):
    pass


def default_class(name: str) -> str:
    """The lockdep class of a lock named ``name``: the name up to the first
    ``#`` or ``@`` (``"ptl@0x7f0000"`` and ``"ptl@0x7f2000"`` are one class,
    as every PTL is one class in Linux)."""
    for sep in ("#", "@"):
        name = name.split(sep, 1)[0]
    return name


def lock_class(lock: Any) -> str:
    cls = getattr(lock, "lock_class", None)
    if type(cls) is str:
        return cls
    return str(cls) if cls is not None else str(getattr(lock, "name", type(lock).__name__))


class Lockdep:
    """The dependency graph: ``edges[a][b]`` = where *a then b* was first seen."""

    __slots__ = ("enabled", "edges")

    def __init__(self) -> None:
        self.enabled = True
        self.edges: dict[str, dict[str, str]] = {}

    def reset(self) -> None:
        self.edges.clear()

    def _reaches(self, src: str, dst: str) -> list[str] | None:
        """A path src -> ... -> dst in the graph, or None."""
        stack: list[tuple[str, list[str]]] = [(src, [src])]
        seen = {src}
        while stack:
            node, path = stack.pop()
            if node == dst:
                return path
            for nxt in self.edges.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    def acquire(self, task: Any, lock: Any) -> None:
        """``task`` (holding ``task.held``) is about to take ``lock`` (a
        SpinLock or RwSemaphore; what it holds may be anything lockable).

        The common case — every *held -> new* edge already in the graph —
        costs one dictionary probe per held lock; only a new edge searches
        the graph for a cycle (:meth:`_add`)."""
        if not self.enabled:
            return
        new = lock.lock_class          # a SpinLock's or RwSemaphore's: a str
        edges = self.edges
        for held in task.held:
            old = getattr(held, "lock_class", None)
            if type(old) is not str:
                old = lock_class(held)
            if old != new:      # same class nesting (dst/src PTL): *_nested in Linux
                succ = edges.get(old)
                if succ is None or new not in succ:
                    self._add(task, old, new)

    def _add(self, task: Any, old: str, new: str) -> None:
        """Record the edge *old -> new*, first seen now; raise
        :class:`LockOrderViolation` if *new* already reaches *old*."""
        path = self._reaches(new, old)
        if path is not None:
            first = self.edges[path[0]][path[1]]
            raise LockOrderViolation(
                f"possible circular locking dependency: {task.name} takes {new} while holding "
                f"{old}, but {' -> '.join(path)} was seen before ({path[0]} -> {path[1]} "
                f"first by {first})")
        self.edges.setdefault(old, {})[new] = task.name


LOCKDEP = Lockdep()


def in_atomic(task: Any) -> str | None:
    """Why ``task`` may not sleep now, or None."""
    if task.rcu_nesting > 0:
        return "inside an RCU read-side section"
    cpu = task.cpu
    if task.irq_disabled > 0 or (cpu is not None and getattr(cpu, "irq_disabled", 0) > 0):
        return "with interrupts disabled"
    for held in task.held:
        if getattr(held, "spinning", False):
            return f"holding spinlock {getattr(held, 'name', held)}"
    return None


def might_sleep(task: Any, what: str, lock: Any = None) -> None:
    """Raise :class:`SleepInAtomic` if ``task`` may not sleep here (in
    ``what``, or ``what(lock.name)`` when ``lock`` is given: the message is
    only built when it is needed)."""
    if task is None or not LOCKDEP.enabled:
        return
    if not (task.held or task.rcu_nesting or task.irq_disabled
            or getattr(task.cpu, "irq_disabled", 0)):
        return                  # in_atomic()'s answer, without the call
    why = in_atomic(task)
    if why is not None:
        if lock is not None:
            what = f"{what}({lock.name})"
        raise SleepInAtomic(f"BUG: sleeping function called from invalid context: {what} "
                            f"by {task.name} {why}")


def check_exit(task: Any) -> None:
    """A task is returning to user space: it must hold nothing."""
    if task.held:
        names = ", ".join(str(getattr(h, "name", h)) for h in task.held)
        raise HeldAtExit(f"lock held when returning to user space: {task.name} holds {names}")
    if task.rcu_nesting:
        raise HeldAtExit(f"{task.name} exits inside an RCU read-side section "
                         f"(rcu_read_lock depth {task.rcu_nesting})")
    if task.irq_disabled:
        raise HeldAtExit(f"{task.name} exits with interrupts disabled")
