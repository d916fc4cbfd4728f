"""Check your own lock or protocol: the public checker API.

A *program* is an ``async def`` main function.  It creates its shared
state, spawns threads, joins them and checks what they did; the explorer
runs it under every interleaving it chooses, re-running ``main`` from the
start for each schedule (so every schedule gets fresh state)::

    from specfault.check.api import Shared, check, find_bug, join, program, spawn

    @program
    async def lost_update():
        counter = Shared("counter", 0)

        async def worker():
            v = await counter.load()          # each await is one step the
            await counter.store(v + 1)        # explorer may preempt at

        threads = [await spawn(worker) for _ in range(8)]
        for t in threads:
            await join(t)
        check(counter.value == 8, f"lost update: counter is {counter.value}, expected 8")

    result = find_bug(lost_update)            # the default portfolio, 10,000 schedules
    print(result.report)                      # the violation, a swimlane, a replay line

The rules
---------
* Shared state lives in :class:`Shared` cells (or in the locks below).
  Threads touch it only through awaited ops — ``load``, ``store``,
  ``cmpxchg``, ``xchg``, ``fetch_add`` ... — each one atomic step of the
  explorer with a declared *footprint* (the cell, read or written), which
  is what makes partial-order reduction sound.  Code between two awaits is
  private to its thread.  ``cell.value`` reads the cell directly: for
  setting up, and for checks after :func:`join` (when nobody else can
  change it) or in ``final``; inside a running thread use ``await
  cell.load()``.
* Spin loops wait with ``await cell.wait_until(pred)`` (one blocking step,
  enabled when ``pred(value)`` holds) or call ``await cpu_relax()`` in the
  loop (the explorer's fairness then runs someone else before the spinner
  again); a spin loop with neither can be reported as a livelock.
* :func:`check` states what must hold, with a message saying what failed
  (with the values): it fails the execution at that point.  ``final``
  (a function of main's return value) is checked once everything ended.

What every execution is checked for
-----------------------------------
a failed :func:`check` or ``final`` (kind ``property``); an exception
escaping a thread (``error``); use of a :class:`Shared` after
:meth:`Shared.free` (``UseAfterFree``) and double free; deadlock (nobody
can run: the report says what each thread waits for); livelock (the step
limit); and, each switchable in one place, :class:`Checks`:

* ``lockdep`` — Linux's locking validator: a lock order that could
  deadlock (``LockOrderViolation``, reported when the two orders have been
  *seen*, even in a schedule that did not deadlock), unlocking a lock one
  does not hold (``BadUnlock``), sleeping (a :class:`Mutex`, a
  :class:`Semaphore`, a :class:`CondVar` wait) while holding a spinlock
  (``SleepInAtomic``);
* ``held_at_exit`` — a thread that ends holding a lock (``HeldAtExit``);
* ``spurious_wakeups`` — how many times each thread's condition-variable
  waits may return without a signal (0 by default: a wait returns only
  after ``signal``/``broadcast``; POSIX and the kernel's wait queues allow
  spurious wakeups, so a correct waiter re-checks its condition in a loop —
  set 1 to make the explorer try them).

``program(main, checks=Checks(lockdep=False))`` is the one place to turn a
check off.

Running it
----------
:func:`explore` (the default: the portfolio, 10,000 schedules),
:func:`find_bug` (the same, expecting a bug) and :func:`verify`
(exhaustive: DFS without a preemption bound, with sleep sets) return the
explorer's :class:`~specfault.check.explore.Result`.  A program is a
:class:`~specfault.check.scenario.Scenario`: everything that takes one
(``specfault.check.pytest``'s helpers, ``replay``, the command line:
``specfault check path/to/file.py:attr`` or ``module:attr``) takes it.
Its name is ``module:attr``, so the replay line of a report runs again.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from specfault.check.explore import ExploreConfig, Result
from specfault.check.explore import explore as _explore
from specfault.check.roundrobin import PORTFOLIO
from specfault.check.scenario import Env, Scenario, Thread
from specfault.runtime import STATE, KObject, ModelBug, Op, UseAfterFree, Yield
from specfault.runtime.task import Task
from specfault.sync.lockdep import LOCKDEP, BadUnlock, might_sleep
from specfault.sync.spinlock import SpinLock as _SpinLock

__all__ = [
    "Checks", "CheckFailed", "CondVar", "DoubleFree", "Handle", "Mutex", "Semaphore", "Shared",
    "SpinLock", "check", "cpu_relax", "explore", "find_bug", "join", "program", "spawn", "verify",
    "DEFAULT_SCHEDULES",
]

#: the default budget of :func:`explore` and :func:`find_bug`, in schedules
DEFAULT_SCHEDULES = 10_000


# -- the checks, in one place ------------------------------------------------

@dataclass(frozen=True)
class Checks:
    """Which checks run on a program (each on by default but spurious
    wakeups).  Pass as ``program(main, checks=Checks(...))``."""

    #: lock order (LockOrderViolation), BadUnlock, SleepInAtomic
    lockdep: bool = True
    #: a thread ending with a lock held is a failure (HeldAtExit)
    held_at_exit: bool = True
    #: a thread's CondVar waits may return this many times in all without a
    #: signal (0: never)
    spurious_wakeups: int = 0


class CheckFailed(AssertionError):
    """A :func:`check` that did not hold (reported as kind ``property``)."""


class DoubleFree(ModelBug):
    """:meth:`Shared.free` of a cell already freed."""


def check(cond: object, message: str = "check failed") -> None:
    """Fail the execution here unless ``cond`` is true; ``message`` says
    what failed (put the values in it: ``f"counter is {n}, expected 8"``)."""
    if not cond:
        raise CheckFailed(message)


# -- the program's world -----------------------------------------------------

class World:
    """One execution of a program: what its ops need to find (the driver's
    ``spawn``, the checks, the spurious-wakeup budgets) and main's result.
    Every task of the program has it as its ``mm`` (the threads of one
    program share one address space)."""

    __slots__ = ("env", "checks", "result", "spurious", "spawned")

    def __init__(self, env: Env, checks: Checks) -> None:
        self.env = env
        self.checks = checks
        self.result: Any = None
        #: tid -> spurious wakeups left
        self.spurious: dict[int, int] = {}
        self.spawned = 0

    def label(self) -> str:
        return "program"


def _world(what: str) -> World:
    task = STATE.task
    world = task.mm if task is not None else None
    if not isinstance(world, World):
        raise ModelBug(f"{what}: not inside a program's thread (use specfault.check.api.program)")
    return world


def _task() -> Task:
    task = STATE.task
    if task is None:
        raise ModelBug("no task is running")
    return task


M = TypeVar("M", bound=Callable[..., Coroutine[Any, Any, Any]])


def program(main: Callable[..., Coroutine[Any, Any, Any]] | None = None, *, name: str | None = None,
            final: Callable[[Any], Any] | None = None,
            observe: Callable[[Any], Hashable] | None = None,
            checks: Checks | None = None, args: tuple[Any, ...] = (),
            description: str = "") -> Any:
    """Make a checkable program (a :class:`Scenario`) of ``main``, an
    ``async def`` run as thread ``main`` (with ``args``) in each execution.

    ``final(result)`` — main's return value -> None/True if it holds, else
    False or a message — is checked after every thread ended.
    ``observe(result)`` gives a hashable summary of the outcome (exhaustive
    runs with ``observe=True`` collect the set).  ``name`` defaults to
    ``module:function``, which the command line and ``--replay`` resolve.
    Usable as ``@program`` or ``@program(checks=...)``."""
    if main is None:
        return lambda fn: program(fn, name=name, final=final, observe=observe, checks=checks,
                                  args=args, description=description)
    chk = checks if checks is not None else Checks()
    label = name if name is not None else _default_name(main)

    def setup(env: Env) -> World:
        return World(env, chk)

    async def run_main(world: World) -> None:
        world.result = await main(*args)

    def final_check(world: World) -> Any:
        return final(world.result) if final is not None else None

    def observed(world: World) -> Hashable:
        return observe(world.result) if observe is not None else world.result

    return Scenario(label, setup, [Thread("main", run_main, mm=lambda world: world)],
                    check=final_check if final is not None else None,
                    observe=observed, rcu=False, check_exit=chk.held_at_exit,
                    lockdep=chk.lockdep, description=description or (main.__doc__ or "").strip(),
                    tags=("program",))


def _default_name(fn: Callable[..., Any]) -> str:
    """``module:function`` (a file the command line loaded by path is a
    module named by that path): what ``lookup`` and ``--replay`` resolve,
    when the program is a module-level attribute of the function's name."""
    return f"{fn.__module__}:{fn.__name__}"


# -- shared cells ------------------------------------------------------------

class Shared(KObject):
    """A shared variable named ``name`` (reports name it), holding ``value``.

    Each method returns one atomic op to ``await``; the atomics follow
    Linux's names and return conventions (``cmpxchg`` and ``xchg`` return
    the old value, ``fetch_*`` the old value, ``add_return`` the new)."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: Any = None) -> None:
        super().__init__()
        self.name = name
        self.value = value

    def label(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Shared {self.name}={self.value!r}>"

    def load(self) -> Op:
        """READ_ONCE: the value."""
        return _Load(self)

    def store(self, value: Any) -> Op:
        """WRITE_ONCE."""
        return _Store(self, value)

    def cmpxchg(self, old: Any, new: Any) -> Op:
        """Set ``new`` if the value equals ``old``; returns the value found
        (it succeeded iff that equals ``old``)."""
        return _Cmpxchg(self, old, new)

    def xchg(self, new: Any) -> Op:
        """Set ``new``; returns the old value."""
        return _Rmw(self, "xchg", lambda _v, n: n, new, old=True)

    def fetch_add(self, delta: int = 1) -> Op:
        return _Rmw(self, "fetch_add", lambda v, d: v + d, delta, old=True)

    def fetch_sub(self, delta: int = 1) -> Op:
        return _Rmw(self, "fetch_sub", lambda v, d: v - d, delta, old=True)

    def fetch_or(self, bits: int) -> Op:
        return _Rmw(self, "fetch_or", lambda v, b: v | b, bits, old=True)

    def fetch_and(self, bits: int) -> Op:
        return _Rmw(self, "fetch_and", lambda v, b: v & b, bits, old=True)

    def add_return(self, delta: int = 1) -> Op:
        """atomic_add_return: the new value."""
        return _Rmw(self, "add_return", lambda v, d: v + d, delta, old=False)

    def wait_until(self, pred: Callable[[Any], bool], what: str = "") -> Op:
        """Block (one step, enabled only when ``pred(value)`` holds) and
        return the value: a spin-wait without the spinning."""
        return _WaitUntil(self, pred, what)

    def free(self) -> Op:
        """kfree: later ops on the cell are a ``UseAfterFree``; freeing it
        again a :class:`DoubleFree`."""
        return _Free(self)


class _CellOp(Op):
    __slots__ = ("cell", "got")
    write: ClassVar[bool] = True

    def __init__(self, cell: Shared) -> None:
        self.cell = cell
        self.got: Any = _UNSET

    def live(self) -> Shared:
        cell = self.cell
        if cell.freed_at is not None:
            raise UseAfterFree(cell, cell.freed_at, self.kind)
        return cell

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.cell, "value", "w" if self.write else "r"),)

    def shown(self) -> str:
        return "" if self.got is _UNSET else f" -> {_show(self.got)}"


_UNSET = object()


def _show(v: Any) -> str:
    """A value as reports print it: the same in every run (an object
    without a repr of its own shows its name or class, never an address)."""
    if isinstance(v, tuple):
        return "(" + ", ".join(_show(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    label = getattr(v, "label", None)
    if callable(label):
        return str(label())
    if type(v).__repr__ is object.__repr__:
        name = getattr(v, "name", None)
        return str(name) if isinstance(name, str) else f"<{type(v).__name__}>"
    text = repr(v)
    return text if len(text) <= 40 else text[:39] + "~"


class _Load(_CellOp):
    __slots__ = ()
    kind = "load"
    write = False

    def perform(self) -> Any:
        self.got = self.live().value
        return self.got

    def describe(self) -> str:
        return f"load {self.cell.name}{self.shown()}"


class _Store(_CellOp):
    __slots__ = ("new",)
    kind = "store"

    def __init__(self, cell: Shared, new: Any) -> None:
        super().__init__(cell)
        self.new = new

    def perform(self) -> None:
        self.live().value = self.new

    def describe(self) -> str:
        return f"store {self.cell.name} = {_show(self.new)}"


class _Cmpxchg(_CellOp):
    __slots__ = ("old", "new")
    kind = "cmpxchg"

    def __init__(self, cell: Shared, old: Any, new: Any) -> None:
        super().__init__(cell)
        self.old, self.new = old, new

    def perform(self) -> Any:
        cell = self.live()
        cur = cell.value
        if cur == self.old:
            cell.value = self.new
        self.got = cur
        return cur

    def describe(self) -> str:
        what = f"cmpxchg {self.cell.name} {_show(self.old)} -> {_show(self.new)}"
        if self.got is _UNSET:
            return what
        return what + (" ok" if self.got == self.old else f" failed (found {_show(self.got)})")


class _Rmw(_CellOp):
    __slots__ = ("name", "fn", "arg", "old")

    def __init__(self, cell: Shared, name: str, fn: Callable[[Any, Any], Any], arg: Any,
                 old: bool) -> None:
        super().__init__(cell)
        self.name, self.fn, self.arg, self.old = name, fn, arg, old

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.name

    def perform(self) -> Any:
        cell = self.live()
        before = cell.value
        cell.value = self.fn(before, self.arg)
        self.got = before if self.old else cell.value
        return self.got

    def describe(self) -> str:
        return f"{self.name} {self.cell.name} {_show(self.arg)}{self.shown()}"


class _WaitUntil(_CellOp):
    __slots__ = ("pred", "what")
    kind = "wait_until"
    blocking = True
    write = False

    def __init__(self, cell: Shared, pred: Callable[[Any], bool], what: str) -> None:
        super().__init__(cell)
        self.pred, self.what = pred, what

    def enabled(self) -> bool:
        cell = self.cell
        return cell.freed_at is not None or bool(self.pred(cell.value))   # freed: fail when run

    def perform(self) -> Any:
        self.got = self.live().value
        return self.got

    def describe(self) -> str:
        return f"wait until {self.what or self.cell.name}{self.shown()}"


class _Free(_CellOp):
    __slots__ = ()
    kind = "free"

    def perform(self) -> None:
        cell = self.cell
        task = STATE.task
        who = task.name if task is not None else "?"
        if cell.freed_at is not None:
            raise DoubleFree(f"double free of {cell.name} by {who}; first freed by {cell.freed_at}")
        cell.poison(who)

    def describe(self) -> str:
        return f"free {self.cell.name}"


def cpu_relax() -> Op:
    """An explicit preemption point for a spin loop (the explorer runs
    someone else before the spinner again, when anyone can run)."""
    return Yield()


# -- threads -----------------------------------------------------------------

class Handle:
    """A spawned thread; ``await join(handle)`` waits for it to end."""

    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task

    @property
    def name(self) -> str:
        return self.task.name

    def __repr__(self) -> str:
        return f"<Handle {self.task.name}>"


class _Spawn(Op):
    __slots__ = ("fn", "args", "name", "made")
    kind = "spawn"

    def __init__(self, fn: Any, args: tuple[Any, ...], name: str | None) -> None:
        self.fn, self.args, self.name = fn, args, name
        self.made: Task | None = None

    def perform(self) -> Handle:
        world = _world("spawn")
        fn = self.fn
        coro = fn if inspect.iscoroutine(fn) else fn(*self.args)
        if not inspect.iscoroutine(coro):
            raise TypeError(f"spawn: {fn!r} did not return a coroutine (is it an async def?)")
        spawn = world.env.spawn
        if spawn is None:
            coro.close()
            raise ModelBug("spawn: this driver cannot create tasks")
        world.spawned += 1
        name = self.name or f"T{world.spawned}"
        try:
            self.made = spawn(name, coro, world)
        except BaseException:
            coro.close()
            raise
        return Handle(self.made)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        # it creates the next actor: ordered with every other spawn (the
        # actor numbers and default names follow the order), independent
        # of everything else (the new thread's first step, its start,
        # touches nothing shared)
        world = STATE.task.mm if STATE.task is not None else None
        return ((world if isinstance(world, World) else _Spawn, "threads", "w"),)

    def describe(self) -> str:
        return f"spawn {self.made.name if self.made is not None else self.name or ''}".rstrip()


def spawn(fn: Callable[..., Coroutine[Any, Any, Any]] | Coroutine[Any, Any, Any], *args: Any,
          name: str | None = None) -> Op:
    """``handle = await spawn(fn, *args, name=...)``: start ``fn(*args)``
    (an ``async def``, or a coroutine object) as a new thread with its own
    CPU; its name (default ``T1``, ``T2``, ... in spawn order) labels it in
    reports."""
    return _Spawn(fn, args, name)


class _Join(Op):
    __slots__ = ("handle",)
    kind = "join"
    blocking = True

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def enabled(self) -> bool:
        return self.handle.task.done

    def perform(self) -> Any:
        return self.handle.task.result

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        # what enabled() reads: the thread's end, which nothing undoes (once
        # enabled, a join commutes with every step); perform reads its result
        return ((self.handle.task, "done", "r"),)

    def describe(self) -> str:
        return f"join {self.handle.task.name}"


def join(handle: Handle) -> Op:
    """``result = await join(handle)``: wait until the thread ended; its
    return value."""
    if not isinstance(handle, Handle):
        raise TypeError(f"join: expected the Handle spawn returned, not {handle!r}")
    return _Join(handle)


# -- locks -------------------------------------------------------------------

class _LockBase:
    """What locks share: a name (its lockdep class) and ``async with``."""

    __slots__ = ("name", "lock_class", "owner")
    spinning = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock_class = name
        self.owner: Task | None = None

    def label(self) -> str:
        return self.name

    def lock(self) -> Op:
        raise NotImplementedError

    def unlock(self) -> Op:
        raise NotImplementedError

    async def __aenter__(self) -> None:
        await self.lock()

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:        # a failing or abandoned thread leaves it held
            await self.unlock()


class Mutex(_LockBase):
    """A sleeping lock (struct mutex): ``await m.lock()``, ``await
    m.unlock()``, ``ok = await m.trylock()``, or ``async with m:``.  Its
    name is its lockdep class."""

    __slots__ = ()

    def lock(self) -> Op:
        return _MutexLock(self)

    def trylock(self) -> Op:
        return _MutexTrylock(self)

    def unlock(self) -> Op:
        return _MutexUnlock(self)

    def __repr__(self) -> str:
        return f"<Mutex {self.name} owner={self.owner}>"


def _take(lock: _LockBase, task: Task, ordered: bool) -> None:
    if ordered and task.held:
        LOCKDEP.acquire(task, lock)
    lock.owner = task
    task.held.append(lock)


def _release(lock: _LockBase, what: str) -> Task:
    task = _task()
    if lock.owner is not task:
        holder = lock.owner.name if lock.owner is not None else "nobody"
        raise BadUnlock(f"{what}({lock.name}) by {task.name}, but it is held by {holder}")
    lock.owner = None
    task.held.remove(lock)
    return task


class _MutexLock(Op):
    __slots__ = ("m", "got")
    kind = "mutex_lock"
    blocking = True

    def __init__(self, m: Mutex) -> None:
        self.m = m
        self.got: Any = _UNSET

    def enabled(self) -> bool:
        return self.m.owner is None

    def perform(self) -> None:
        task = _task()
        might_sleep(task, "mutex_lock", self.m)
        _take(self.m, task, True)
        self.got = None

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.m, "owner", "w"),)

    def describe(self) -> str:
        owner = self.m.owner
        if self.got is _UNSET and owner is not None:     # still waiting: for whom
            return f"mutex_lock {self.m.name} (held by {owner.name})"
        return f"mutex_lock {self.m.name}"


class _MutexTrylock(_MutexLock):
    __slots__ = ()
    kind = "mutex_trylock"
    blocking = False

    def perform(self) -> bool:  # type: ignore[override]
        if self.m.owner is not None:
            self.got = False
            return False
        _take(self.m, _task(), False)     # a trylock cannot deadlock: no lockdep edge
        self.got = True
        return True

    def describe(self) -> str:
        return f"mutex_trylock {self.m.name}" + ("" if self.got is _UNSET else f" -> {self.got}")


class _MutexUnlock(Op):
    __slots__ = ("m",)
    kind = "mutex_unlock"

    def __init__(self, m: Mutex) -> None:
        self.m = m

    def perform(self) -> None:
        _release(self.m, "mutex_unlock")

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.m, "owner", "w"),)

    def describe(self) -> str:
        return f"mutex_unlock {self.m.name}"


class SpinLock(_SpinLock):
    """The kernel model's spinlock (``specfault.sync.SpinLock``), with
    ``async with``: holding it, a thread may not sleep (lockdep's
    SleepInAtomic)."""

    __slots__ = ()

    async def __aenter__(self) -> None:
        await self.lock()

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:        # a failing or abandoned thread leaves it held
            await self.unlock()


class Semaphore:
    """A counting semaphore: ``await s.down()`` blocks while the count is
    0, ``await s.up()``.  Not owned, so not a lock for lockdep, but a
    ``down`` may sleep (SleepInAtomic under a spinlock)."""

    __slots__ = ("name", "count")

    def __init__(self, name: str, count: int = 1) -> None:
        self.name = name
        self.count = count

    def label(self) -> str:
        return self.name

    def down(self) -> Op:
        return _SemDown(self)

    def up(self) -> Op:
        return _SemUp(self)


class _SemDown(Op):
    __slots__ = ("s",)
    kind = "down"
    blocking = True

    def __init__(self, s: Semaphore) -> None:
        self.s = s

    def enabled(self) -> bool:
        return self.s.count > 0

    def perform(self) -> None:
        might_sleep(_task(), "down", self.s)
        self.s.count -= 1

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.s, "count", "w"),)

    def describe(self) -> str:
        return f"down {self.s.name}"


class _SemUp(_SemDown):
    __slots__ = ()
    kind = "up"
    blocking = False

    def perform(self) -> None:
        self.s.count += 1

    def describe(self) -> str:
        return f"up {self.s.name}"


class _Waiter:
    __slots__ = ("task", "woken")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.woken = False


class CondVar:
    """A condition variable used with a :class:`Mutex`: ``await
    cv.wait(m)`` (holding ``m``: releases it and sleeps, atomically; takes
    it again before returning), ``await cv.signal()`` (wakes the longest
    waiter, if any), ``await cv.broadcast()`` (wakes all).  A signal with
    nobody waiting is lost.  Waits return only when woken unless
    :class:`Checks` ``spurious_wakeups`` allows otherwise."""

    __slots__ = ("name", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiters: list[_Waiter] = []

    def label(self) -> str:
        return self.name

    async def wait(self, m: Mutex) -> None:
        w = await _CondPrepare(self, m)
        await _CondSleep(self, w)
        await m.lock()

    def signal(self) -> Op:
        return _CondWake(self, False)

    def broadcast(self) -> Op:
        return _CondWake(self, True)


class _CondPrepare(Op):
    __slots__ = ("cv", "m")
    kind = "cond_wait"

    def __init__(self, cv: CondVar, m: Mutex) -> None:
        self.cv, self.m = cv, m

    def perform(self) -> _Waiter:
        task = _task()
        might_sleep(task, "cond_wait", self.cv)
        _release(self.m, f"cond_wait({self.cv.name}): mutex_unlock")
        w = _Waiter(task)
        self.cv.waiters.append(w)
        return w

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.cv, "waiters", "w"), (self.m, "owner", "w"))

    def describe(self) -> str:
        return f"cond_wait {self.cv.name}: unlock {self.m.name}, sleep"


class _CondSleep(Op):
    __slots__ = ("cv", "w", "spurious")
    kind = "cond_sleep"
    blocking = True

    def __init__(self, cv: CondVar, w: _Waiter) -> None:
        self.cv, self.w = cv, w
        self.spurious = False

    def _budget(self) -> int:
        world = self.w.task.mm
        if not isinstance(world, World):
            return 0
        return world.spurious.setdefault(self.w.task.tid, world.checks.spurious_wakeups)

    def enabled(self) -> bool:
        return self.w.woken or self._budget() > 0

    def perform(self) -> None:
        w = self.w
        if not w.woken:              # a spurious wakeup: leave the queue
            world = w.task.mm
            world.spurious[w.task.tid] -= 1
            self.cv.waiters.remove(w)
            self.spurious = True

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.cv, "waiters", "w"),)

    def describe(self) -> str:
        if self.w.task.pending is self:          # not run yet: what it waits for
            return f"sleep on {self.cv.name}"
        return f"woken on {self.cv.name}" + (" (spurious wakeup)" if self.spurious else "")


class _CondWake(Op):
    __slots__ = ("cv", "all", "woke")
    kind = "cond_signal"

    def __init__(self, cv: CondVar, all_: bool) -> None:
        self.cv, self.all = cv, all_
        self.woke: list[str] | None = None

    def perform(self) -> None:
        waiters = self.cv.waiters
        n = len(waiters) if self.all else min(1, len(waiters))
        woken, self.cv.waiters = waiters[:n], waiters[n:]
        for w in woken:
            w.woken = True
        self.woke = [w.task.name for w in woken]

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.cv, "waiters", "w"),)

    def describe(self) -> str:
        what = f"{'broadcast' if self.all else 'signal'} {self.cv.name}"
        if self.woke is None:
            return what
        return what + (f": wakes {', '.join(self.woke)}" if self.woke else ": nobody waits")


# -- running -----------------------------------------------------------------

def explore(prog: Scenario, schedules: int | None = DEFAULT_SCHEDULES, *, strategy: str = "portfolio",
            seed: int = 0, **config: Any) -> Result:
    """Explore ``prog`` with the default portfolio (or ``strategy``) for at
    most ``schedules`` schedules (``None``: until the strategy is
    exhausted); no time cap unless ``budget_seconds=`` is given.  Other
    keywords are :class:`~specfault.check.explore.ExploreConfig` fields."""
    cfg = ExploreConfig(**{"strategy": strategy, "max_schedules": schedules, "seed": seed,
                           "budget_seconds": None, **config})
    return _explore(prog, cfg)


def find_bug(prog: Scenario, schedules: int = DEFAULT_SCHEDULES, **config: Any) -> Result:
    """:func:`explore`, for a program expected to be broken: the result's
    ``ok`` is False when a violation was found; ``report`` shows it and
    ``schedules`` says after how many schedules."""
    return explore(prog, schedules, **config)


def verify(prog: Scenario, schedules: int | None = 100_000, **config: Any) -> Result:
    """Every schedule (DFS without a preemption bound, with sleep sets: the
    reduction keeps every reachable state), for at most ``schedules``;
    ``exhausted`` tells whether the search finished."""
    return explore(prog, schedules, **{"strategy": "dfs", "max_preemptions": None,
                                       "reduction": "sleep", **config})


#: the default portfolio's members, for reference (see check/roundrobin.py)
PORTFOLIO_MEMBERS = PORTFOLIO
