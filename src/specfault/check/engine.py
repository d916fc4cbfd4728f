"""The controlled scheduler: run one execution of a scenario, step by step.

Why it is shaped so
-------------------
Every task of the scenario runs its model coroutine with ``STATE.inline``
off, so each op is yielded to us; the task's *pending* op is what it will do
when chosen.  A step is: ask the strategy's *chooser* which runnable actor
goes (a task whose pending op is enabled, or the RCU callback processor when
a callback's grace period has ended), perform that op atomically, send the
result back into the coroutine and run it to its next op.  Switching
``STATE``, advancing and closing the coroutines and the preemptibility test
are ``runtime/driver.py``'s, shared with the direct driver and the
simulator.  Everything the model does between two ops is private to the
task, so choosing at ops explores every interleaving that matters.

State changes happen in :meth:`Execution.run` only; a strategy sees the
execution (tasks, their pending ops, the step count) and returns a choice.
Everything is deterministic: no hash-ordered iteration, no clocks.

Fairness (Musuvathi & Qadeer, "Fair Stateless Model Checking", PLDI 2008,
simplified): a task whose last step was a ``Yield`` (``cond_resched``,
``cpu_relax`` in a retry loop) cannot run again until another actor has
taken a step, if any other can.  Spin-and-retry loops therefore terminate
in every schedule where the awaited task can progress, instead of showing
up as false livelocks.  Retry loops in model code must ``await Yield()``.

Failures (:class:`Failure`) are the first of: a ``ModelBug`` raised by an op
(``UseAfterFree``, lockdep, ...), an exception escaping a task, a task that
finishes holding a lock, a per-step invariant, deadlock (nobody runnable but
someone unfinished), livelock (step limit), and the final property.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from specfault.check.scenario import Env, Scenario
from specfault.runtime import STATE, ModelBug, Op, Task, UseAfterFree, Yield
from specfault.runtime.driver import advance, close, enter, finished, leave, preemptible
from specfault.runtime.site import task_site
from specfault.sync.cpu import Cpu
from specfault.sync.lockdep import LOCKDEP, LockdepBug, check_exit


def _weak_spawn(ref: weakref.WeakMethod[Any]) -> Callable[..., Any]:
    def spawn(*args: Any, **kwargs: Any) -> Any:
        method = ref()
        assert method is not None, "spawn: the execution is gone"
        return method(*args, **kwargs)
    return spawn


#: a chooser returns an actor from ``enabled``, or STOP to abandon the run
STOP = -1
Chooser = Callable[["Execution", list[int]], int]


@dataclass
class Failure:
    """What went wrong, where.  ``kind`` is ``property``, ``invariant``,
    ``deadlock``, ``livelock``, ``error``, or the ModelBug class name."""

    kind: str
    message: str
    step: int
    actor: int | None = None
    site: str = ""

    def headline(self) -> str:
        return f"{self.kind}: {self.message}"

    def same_as(self, other: Failure) -> bool:
        """Same property violated (used by minimisation)."""
        return self.kind == other.kind


class Started(Op):
    """The first step of a spawned task: its coroutine starts (runs to its
    first op).  Touches nothing shared."""

    __slots__ = ("name",)
    kind = "start"

    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self) -> None:
        return None

    def describe(self) -> str:
        return f"start {self.name}"


class _RcuOp:
    """Trace entry for a step of the RCU callback processor."""

    __slots__ = ("what",)

    def __init__(self, what: str | None) -> None:
        self.what = what

    def describe(self) -> str:
        return f"rcu callback: {self.what}"


def _verdict(prop: Callable[[Any], Any], state: Any) -> str | None:
    """None if the property holds, else a message."""
    try:
        ok = prop(state)
    except AssertionError as exc:
        return str(exc) or "assertion failed"
    if ok is None or ok is True:
        return None
    if ok is False:
        return getattr(prop, "__name__", "property") + " is false"
    return str(ok)


class Execution:
    """One run of ``scenario``.  Build, then :meth:`run` with a chooser."""

    def __init__(self, scenario: Scenario, step_limit: int = 10_000) -> None:
        self.scenario = scenario
        self.step_limit = step_limit
        # a world lent to this execution (Scenario.snapshot) goes back to
        # its pool once this execution is garbage: nothing the world keeps
        # (env included) may refer back to the execution, or it never does
        env, self.state = scenario.world(self)
        # the one hook for tasks created while running (check.api.spawn),
        # held weakly for that reason
        env.spawn = _weak_spawn(weakref.WeakMethod(self.spawn))
        self.env: Env = env
        self.rcu = env.rcu if scenario.rcu else None
        cpus = env.cpus
        self.tasks: list[Task] = []
        self.shared_cpus = len(cpus) < len(scenario.threads)
        for i, th in enumerate(scenario.threads):
            cpu = cpus[(th.cpu if th.cpu is not None else i) % len(cpus)]
            task = Task(i, th.name, th.fn(self.state), th.mm(self.state) if th.mm else None, cpu)
            if cpu.current is None:
                cpu.current = task
            self.tasks.append(task)
        #: actor numbers: tasks 0..n-1, then the RCU processor
        self.rcu_actor = len(self.tasks) if self.rcu is not None else -2
        self.choices: list[int] = []
        self.trace: list[tuple[int, Any]] = []
        self.steps = 0
        self.preemptions = 0
        self.preempted_at: list[int] = []
        self.prev = -1
        self.yielded = -1        # the actor whose last step was a Yield
        self.failure: Failure | None = None
        self.pruned = False      # abandoned by the strategy (sleep-set blocked)
        self.finished = False    # ran to completion (or failed)

    # -- helpers strategies use --
    def actor_name(self, actor: int) -> str:
        if actor == self.rcu_actor:
            return "rcu"
        return self.tasks[actor].name

    def pending(self, actor: int) -> Any:
        if actor == self.rcu_actor:
            return None
        return self.tasks[actor].pending

    def spawn(self, name: str, coro: Any, mm: Any = None) -> Task:
        """Create a task while the execution runs (called by a task's op,
        e.g. ``check.api.spawn``).  It gets the next actor number and a CPU
        of its own; its first step (:class:`Started`) starts its coroutine.
        Actor numbers must stay stable for schedules to replay, so a
        scenario with an RCU processor (actor n) cannot spawn."""
        if self.rcu is not None:
            raise ModelBug(f"spawn {name}: scenario {self.scenario.name!r} has RCU "
                           f"(its callback processor is actor {self.rcu_actor}); use rcu=False")
        cpu = Cpu(len(self.env.cpus), None)
        self.env.cpus.append(cpu)
        task = Task(len(self.tasks), name, coro, mm, cpu)
        cpu.current = task
        task.pending = Started(name)
        self.tasks.append(task)
        return task

    def n_actors(self) -> int:
        return len(self.tasks) + (1 if self.rcu is not None else 0)

    def trace_lines(self) -> list[str]:
        return [f"{self.actor_name(a)}: {op.describe()}" for a, op in self.trace]

    # -- the one place state changes --
    def _fail(self, kind: str, message: str, actor: int | None, site: str = "") -> None:
        self.failure = Failure(kind, message, self.steps, actor, site)

    def _task_finished(self, task: Task) -> bool:
        """Record the task's fate; True if that is a failure."""
        err = task.error
        if err is not None:
            kind = type(err).__name__ if isinstance(err, ModelBug) else "error"
            if isinstance(err, AssertionError):
                kind = "property"
            self._fail(kind, f"{task.name}: {err}" if not isinstance(err, ModelBug) else str(err),
                       task.tid)
            return True
        if self.scenario.check_exit:
            try:
                check_exit(task)
            except LockdepBug as exc:
                self._fail(type(exc).__name__, str(exc), task.tid)
                return True
        return False

    def _runnable(self) -> list[int]:
        enabled: list[int] = []
        st = STATE
        for i, t in enumerate(self.tasks):
            if t.done:
                continue
            op = t.pending
            if op is not None and op.blocking:
                st.task = t
                if not op.enabled():
                    continue
            if self.shared_cpus:
                cur = t.cpu.current
                if cur is not t and cur is not None and not cur.done and \
                        not preemptible(cur, preempt_rcu=True):
                    continue  # its CPU runs a task that cannot be preempted
            enabled.append(i)
        rcu = self.rcu
        if rcu is not None and rcu.callbacks and rcu.ready():
            enabled.append(self.rcu_actor)
        y = self.yielded
        if y >= 0 and len(enabled) > 1 and y in enabled:
            enabled.remove(y)   # fairness: a task that yielded waits for someone else's step
        return enabled

    def run(self, choose: Chooser) -> Execution:
        """Run to the end (or the first failure, or until ``choose``
        returns STOP).  The step loop is the explorer's hot path: what
        :meth:`_runnable`, ``driver.advance`` and :func:`_verdict` do is
        written out in it (the same code, without a call each per step;
        see "The driver" in docs/explorer.md)."""
        st = STATE
        saved = enter(False, st.task)
        LOCKDEP.reset()   # each execution stands alone: replay must reproduce it
        tasks = self.tasks
        invariant = self.scenario.invariant
        state = self.state
        trace = self.trace
        choices = self.choices
        rcu = self.rcu
        rcu_actor = self.rcu_actor
        shared_cpus = self.shared_cpus
        step_limit = self.step_limit
        _Yield = Yield
        # the counters strategies read (ex.steps, ex.prev, ...) are kept in
        # locals and written back as they change: one store, no loads
        steps = self.steps
        prev = self.prev
        yielded = self.yielded
        try:
            for t in tasks:
                st.task = t
                advance(t)
                if t.done and self._task_finished(t):
                    return self
            while True:
                # -- who can run (_runnable, written out) --
                enabled: list[int] = []
                for i, t in enumerate(tasks):     # (tasks may be added while it runs)
                    if t.done:
                        continue
                    op = t.pending
                    if op is not None and op.blocking:
                        st.task = t
                        if not op.enabled():
                            continue
                    if shared_cpus:
                        cur = t.cpu.current
                        if cur is not t and cur is not None and not cur.done and \
                                not preemptible(cur, preempt_rcu=True):
                            continue  # its CPU runs a task that cannot be preempted
                    enabled.append(i)
                if rcu is not None and rcu.callbacks and rcu.ready():
                    enabled.append(rcu_actor)
                if yielded >= 0 and len(enabled) > 1 and yielded in enabled:
                    enabled.remove(yielded)   # fairness: a task that yielded waits for someone else's step
                if not enabled:
                    if any(not t.done for t in tasks):
                        blocked = "; ".join(f"{t.name} waits in {t.pending.describe() if t.pending else '?'}"
                                            for t in tasks if not t.done)
                        self._fail("deadlock", f"no task can run: {blocked}", None)
                    break
                if steps >= step_limit:
                    self._fail("livelock", f"step limit {step_limit} reached", None)
                    break
                c = choose(self, enabled)
                if c == STOP:
                    self.pruned = True
                    return self
                if prev != c and prev in enabled:
                    self.preemptions += 1
                    self.preempted_at.append(steps)
                self.prev = prev = c
                choices.append(c)
                if c == rcu_actor:
                    if yielded != -1:
                        self.yielded = yielded = -1
                    st.task = None
                    what = rcu.process_one()  # type: ignore[union-attr]
                    trace.append((c, _RcuOp(what)))
                else:
                    t = tasks[c]
                    op = t.pending
                    st.task = t
                    if shared_cpus:
                        t.cpu.current = t
                    trace.append((c, op))
                    try:
                        result = op.perform()  # type: ignore[union-attr]
                    except Exception as exc:  # noqa: BLE001 - an op failing is a finding
                        kind = type(exc).__name__ if isinstance(exc, ModelBug) else "error"
                        site = task_site(t)
                        msg = str(exc)
                        if isinstance(exc, UseAfterFree):
                            msg += f"; accessed at {site}"
                        self.steps = steps + 1
                        self._fail(kind, msg, c, site)
                        return self
                    y = c if type(op) is _Yield else -1
                    if y != yielded:
                        self.yielded = yielded = y
                    # -- driver.advance, written out --
                    try:
                        t.pending = t.send(result)
                    except BaseException as end:  # noqa: BLE001 - the end, or a model error
                        finished(t, end)
                        if self._task_finished(t):
                            self.steps = steps + 1
                            # it failed in this step (the model raised after the
                            # op): count it, as for an op that raised
                            self.failure.step = steps + 1  # type: ignore[union-attr]
                            return self
                self.steps = steps = steps + 1
                if invariant is not None:
                    # -- _verdict, written out --
                    try:
                        ok = invariant(state)
                    except AssertionError as exc:
                        self._fail("invariant", str(exc) or "assertion failed", c)
                        return self
                    if ok is not None and ok is not True:
                        self._fail("invariant", getattr(invariant, "__name__", "property") + " is false"
                                   if ok is False else str(ok), c)
                        return self
            if self.failure is None:
                if rcu is not None:
                    st.task = None
                    rcu.process()
                check = self.scenario.check
                if check is not None:
                    bad = _verdict(check, state)
                    if bad is not None:
                        self._fail("property", bad, None)
        finally:
            self.finished = not self.pruned
            close(tasks)         # free suspended coroutines without warnings
            leave(saved)
        return self


def nonpreemptive(ex: Execution, enabled: list[int]) -> int:
    """Keep running the last actor while it can run, else the lowest-numbered."""
    prev = ex.prev
    if prev in enabled:
        return prev
    return enabled[0]


def replay_chooser(choices: list[int], strict: bool = True) -> Chooser:
    """Follow ``choices``; then continue without preemption.  Strict: a
    choice that cannot run raises :class:`ScheduleError`; lenient: it is
    skipped (used by minimisation)."""
    from specfault.check.schedule import ScheduleError

    pos = [0]

    def choose(ex: Execution, enabled: list[int]) -> int:
        i = pos[0]
        while i < len(choices):
            c = choices[i]
            i += 1
            if c in enabled:
                pos[0] = i
                return c
            if strict:
                raise ScheduleError(
                    f"schedule diverged at step {i - 1}: actor {c} cannot run (runnable: {enabled})")
        pos[0] = i
        return nonpreemptive(ex, enabled)

    return choose
