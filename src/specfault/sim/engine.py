"""The discrete-event engine: the model's threads on N simulated CPUs.

Why it is shaped so
-------------------
Like the explorer (``check/engine.py``), the engine runs each model thread's
coroutine with ``STATE.inline`` off, so every op is yielded to it; unlike
the explorer it does not choose an interleaving, it *times* one.  An event
is ``(time, seq, thread)``: at ``time`` the thread's pending op is charged
by the :class:`~specfault.sim.cost.CostModel`, performed, and the thread's
coroutine advanced to its next op, which becomes the next event at
``time + cost``.  Ties are broken by the insertion counter ``seq``, so a run
is a pure function of its inputs (the seed only feeds the workloads).

A blocking op that is not enabled *parks* its thread, indexed by the
objects in its footprint; an op that touches one of those objects re-checks
the threads parked on it (the model's wakeups are state changes, so no
model code is needed to wake anyone).  Ops whose class says ``spins``
(spinlocks, seqcount begins, IPI waits) spin: the CPU stays busy.  Every
other blocking op (rwsem, the VMA-lock drain, synchronize_rcu) sleeps: the
CPU runs the next runnable thread, and the wakeup costs ``wakeup_ns``.  RCU
callbacks run on a grace-period tick, which also wakes the ops that say
``waits_for_gp``.

State changes happen in :meth:`Engine.step`; :meth:`Engine.run` is
``step`` in a loop.  Switching ``STATE``, advancing and closing the threads'
coroutines and the preemptibility test are ``runtime/driver.py``'s, shared
with the direct driver and the explorer.

Fields
------
# private to the engine (single-threaded)
    heap, seq, now, threads, cpus, idle, runq, parked, nparked
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Coroutine
from heapq import heappop, heappush, heapreplace
from typing import Any

from specfault.mm.vmscan import kswapd_run
from specfault.runtime import STATE, Op, Task, WaitUntil, Work
from specfault.runtime.driver import advance, close, enter, finished, leave, preemptible
from specfault.sim.cost import CostModel, CostProfile
from specfault.sync.rwsem import AT_ONCE, GRANTED, Acquired, Waiter

RUN, SPIN, SLEEP, READY, DONE = range(5)



def _pending(th: Any) -> Op:
    """The op a parked thread waits in (there always is one)."""
    op = th.task.pending
    assert op is not None, f"{th.name}: parked without a pending op"
    return op  # type: ignore[no-any-return]

class SimSleep(Op):
    """Off-CPU time of a workload thread (I/O, binder, a futex): the thread
    leaves its CPU for ``ns`` of simulated time.  Only the simulator knows
    it; under another driver it is an ordinary no-op."""

    __slots__ = ("ns",)
    kind = "sim_sleep"

    def __init__(self, ns: float) -> None:
        self.ns = ns

    def perform(self) -> None:
        return None

    def describe(self) -> str:
        return f"sleep {self.ns:.0f}ns"


# What the engine must know of an op class before it charges an op
# (``blocking`` and ``lockstat`` are class attributes of every op): computed
# once per class.
_BLOCKING, _SLEEP, _LOCKSTAT, _WORK = 1, 2, 4, 8


#: the heap entry of the thread whose ops run now (see Engine._events)
_HEAD = (-math.inf, 0, None)

#: op class -> ``_BLOCKING | _SLEEP | _LOCKSTAT | _WORK`` bits (0 for most ops)
_OP_FLAGS: dict[type, int] = {}


def _op_flags(cls: type) -> int:
    """``_OP_FLAGS[cls]``, computed on first sight of the class."""
    flags = ((_BLOCKING if cls.blocking else 0)               # type: ignore[attr-defined]
             | (_SLEEP if cls is SimSleep else 0)
             | (_LOCKSTAT if cls.lockstat else 0)                 # type: ignore[attr-defined]
             | (_WORK if cls is Work else 0))
    _OP_FLAGS[cls] = flags
    return flags


async def _kswapd(kernel: Any) -> None:
    """kswapd(): sleep until woken, balance the node, sleep again."""
    mem = kernel.mem
    while True:
        await WaitUntil(lambda: kernel.kswapd_wait, "kswapd_wait", (mem,))
        await kswapd_run(kernel)


class SimError(Exception):
    """The simulated run cannot continue: a model error or a deadlock."""


class SimThread:
    """A model task as the engine schedules it, with its own statistics."""

    __slots__ = ("task", "name", "state", "cpu", "slice_end", "park_t", "park_keys",
                 "busy", "spin", "sleep", "lock_wait_t0", "lock_write", "hold_t0", "done_at",
                 "meta", "daemon")

    def __init__(self, task: Task, name: str) -> None:
        self.task = task
        self.name = name
        assert task.coro is not None, "SimThread: the task has no coroutine"
        self.state = READY
        self.cpu: SimCpu | None = None
        self.slice_end = 0.0
        self.park_t = 0.0
        self.park_keys: tuple[int, ...] = ()
        self.busy = 0.0          # CPU time charged to its ops
        self.spin = 0.0          # CPU time spent spinning
        self.sleep = 0.0         # time asleep in a lock
        self.lock_wait_t0 = -1.0
        self.lock_write = False
        self.hold_t0 = -1.0
        self.done_at = -1.0
        self.meta: dict[str, Any] = {}
        #: a kernel thread (kswapd) that waits forever: the run is over
        #: when every other thread is done
        self.daemon = False

    def __repr__(self) -> str:
        return f"<SimThread {self.name}>"


class SimCpu:
    __slots__ = ("id", "cpu", "running", "last", "busy")

    def __init__(self, i: int, cpu: Any) -> None:
        self.id = i
        self.cpu = cpu           # the model's Cpu (TLB, interrupt state)
        self.running: SimThread | None = None
        self.last: SimThread | None = None
        self.busy = 0.0


class Engine:
    """``Engine(machine, profile)``; :meth:`spawn` threads; :meth:`run`."""

    def __init__(self, machine: Any, profile: CostProfile | None = None) -> None:
        self.machine = machine
        self.kernel = machine.kernel
        self.profile = profile or CostProfile()
        ncpus = len(self.kernel.cpus)
        self.cost = CostModel(self.profile, self.kernel.mem.nr_frames, ncpus)
        self.cpus = [SimCpu(i, c) for i, c in enumerate(self.kernel.cpus)]
        self.idle: list[int] = list(range(ncpus))
        self.runq: deque[SimThread] = deque()
        self.heap: list[tuple[float, int, Any]] = []
        self.seq = 0
        self.now = 0.0
        self.threads: list[SimThread] = []
        self.parked: dict[int, list[SimThread]] = {}
        self.nparked = 0
        self.rcu_waiters: list[SimThread] = []
        self.rcu_armed = False
        self.steps = 0
        # mmap_lock statistics
        self.lock_waits: list[float] = []
        self.lock_holds: list[float] = []
        self.write_waits: list[float] = []
        self.on_done: Callable[[SimThread], None] | None = None
        #: told of every busy interval, lock event and wakeup when set (a
        #: sim.trace.SimTrace); None, the default, costs one test per op
        self.observer: Any = None
        if self.kernel.mem.watermark["low"]:
            # kswapd0: woken by an allocation below the low watermark
            # (wakeup_kswapd sets kswapd_wait, then the allocation's op
            # touches ``mem``, where kswapd is parked), it reclaims to high
            # on whatever CPU it gets, competing with the workload
            self.spawn("kswapd0", None, _kswapd(self.kernel), daemon=True)

    # -- building --
    def spawn(self, name: str, mm: Any, coro: Coroutine[Any, Any, Any], at: float = 0.0,
              daemon: bool = False) -> SimThread:
        """Add a thread running ``coro`` in ``mm`` (None: a kernel thread),
        runnable at ``at``.  A ``daemon`` may still be waiting when the run
        ends."""
        task = Task(len(self.threads) + 1, name, coro, mm, None)
        th = SimThread(task, name)
        th.daemon = daemon
        self.threads.append(th)
        self.timer(at, lambda t: self._first(th, t))
        return th

    def timer(self, at: float, fn: Callable[[float], None]) -> None:
        self.seq += 1
        heappush(self.heap, (at, self.seq, fn))

    def _push(self, t: float, th: SimThread) -> None:
        self.seq += 1
        heappush(self.heap, (t, self.seq, th))

    def _first(self, th: SimThread, t: float) -> None:
        st = STATE
        st.task = th.task
        self.now = t
        op = advance(th.task)
        if op is None:
            self._finish(th, t)
            return
        self._ready(th, t)

    # -- CPUs --
    def _ready(self, th: SimThread, t: float) -> None:
        """``th`` can run from ``t``: on an idle CPU, else queued."""
        if self.idle:
            self._dispatch(th, self.idle.pop(0), t)
        else:
            th.state = READY
            self.runq.append(th)

    def _dispatch(self, th: SimThread, cpu_id: int, t: float) -> None:
        c = self.cpus[cpu_id]
        c.running = th
        th.cpu = c
        th.state = RUN
        task = th.task
        task.cpu = c.cpu
        c.cpu.current = task
        if task.mm is not None:
            task.mm.cpumask.add(c.cpu)            # switch_mm()
        th.slice_end = t + self.profile.timeslice_ns
        if c.last is not th and c.last is not None:
            if self.observer is not None:
                self.observer.switch(cpu_id, th, t, self.profile.context_switch_ns)
            t += self.profile.context_switch_ns
            c.busy += self.profile.context_switch_ns
        c.last = th
        self._push(t, th)

    def _release_cpu(self, th: SimThread, t: float) -> None:
        c = th.cpu
        assert c is not None, "_release_cpu: thread not on a CPU"
        c.running = None
        th.cpu = None
        if self.runq:
            self._dispatch(self.runq.popleft(), c.id, t)
        else:
            idle = self.idle
            i = 0
            while i < len(idle) and idle[i] < c.id:
                i += 1
            idle.insert(i, c.id)

    def _finish(self, th: SimThread, t: float) -> None:
        task = th.task
        if task.error is not None:
            raise SimError(f"{th.name} failed at t={t:.0f}ns: "
                           f"{type(task.error).__name__}: {task.error}") from task.error
        th.state = DONE
        th.done_at = t
        if th.cpu is not None:
            self._release_cpu(th, t)
        if self.on_done is not None:
            self.on_done(th)

    # -- the one place state changes --
    def step(self) -> bool:
        """Run the earliest event; False when nothing is left.  When no
        event is left but threads are parked, first wake those whose op
        became enabled (or raise :class:`SimError`: a deadlock)."""
        saved = enter(False, STATE.task)     # every op is yielded to us
        try:
            while not self.heap:
                if not self._unstick():
                    return False
            self._events(-math.inf, once=True)
            return True
        finally:
            leave(saved)

    def _events(self, until: float, once: bool = False) -> bool:
        """Run events in order while the earliest is at or before ``until``
        (just the earliest one if ``once``).  True when it stopped at
        ``until`` (or after the one), False when nothing is left.

        This is :meth:`step` in a loop: pop the earliest event; a timer is
        called; a thread's pending op is charged, performed and its
        coroutine advanced to the next op, whose event is pushed at
        ``t + cost``.  Two shortcuts, neither of which changes the order:

        * The thread's event is not popped but holds the head of the heap
          while its ops run, as ``_HEAD``, which sorts before any event
          (a smaller key at the head keeps the heap a heap, and changes no
          other order).  Then it is replaced by the thread's next event
          (``heapreplace``: one sift instead of a pop and a push), or popped
          if the thread leaves its CPU.
        * Running on: a pushed event takes a larger ``seq`` than every
          queued one, so it would be popped next exactly when its time is
          strictly earlier than every other queued event's (the smaller of
          ``heap[1]`` and ``heap[2]``); then the thread's next op runs at
          once, without the heap.  ``seq`` numbers not taken change no order.
        """
        heap = self.heap
        st = STATE
        cost_model = self.cost
        charge = cost_model.charge
        after = cost_model.after
        after_types = cost_model.after_types
        flags_of = _OP_FLAGS
        io_ns = self.profile.io_ns
        rcu = self.kernel.rcu
        obs = self.observer
        horizon = -math.inf if once else until
        steps = 0
        try:
            while heap:
                t, _, obj = heap[0]
                if t > until and not once:
                    return True
                if type(obj) is not SimThread:
                    heappop(heap)
                    self.now = t
                    obj(t)
                    if once:
                        return True
                    continue
                heap[0] = _HEAD
                th: SimThread = obj
                task = th.task
                st.task = task
                c = th.cpu
                assert c is not None
                cpu = c.id
                send = task.send
                while True:                     # th's ops, while it runs on
                    op: Any = task.pending      # a running thread always has one
                    try:
                        flags = flags_of[type(op)]
                    except KeyError:
                        flags = _op_flags(type(op))
                    if flags:
                        if flags & _BLOCKING and not op.enabled():
                            heappop(heap)
                            self._park(th, op, t)
                            break
                        if flags & _SLEEP:
                            heappop(heap)
                            self._sleep(th, op.ns, t)
                            break
                        if flags & _WORK and op.what in io_ns:
                            # a wait for I/O (swap_read): off-CPU, like
                            # SimSleep; Work.perform() does nothing
                            heappop(heap)
                            self._sleep(th, io_ns[op.what] * op.amount, t)
                            break
                    cost = charge(op, cpu, t)
                    try:
                        result = op.perform()
                    except Exception as exc:  # noqa: BLE001 - a model error ends the run
                        raise SimError(f"{th.name}: {op.describe()} at t={t:.0f}ns: "
                                       f"{type(exc).__name__}: {exc}") from exc
                    if type(result) in after_types:     # else after() is 0.0
                        cost += after(op, result, cpu, t)
                    if obs is not None:
                        obs.op(th, cpu, t, cost, op, result)
                    if flags & _LOCKSTAT:
                        self._lock_stat(th, op, result, t + cost)
                    t2 = t + cost
                    th.busy += cost
                    c.busy += cost
                    steps += 1
                    if self.nparked:
                        self._wake_check(op, t2)
                    self.now = t2
                    # nxt = advance(task, result), without the call
                    try:
                        nxt = send(result)
                    except BaseException as exc:  # noqa: BLE001 - _finish reports an error
                        finished(task, exc)
                        nxt = None
                    else:
                        task.pending = nxt
                    run_on = False
                    if nxt is None:
                        heappop(heap)
                        self._finish(th, t2)
                    elif self.runq and t2 >= th.slice_end and preemptible(task):
                        heappop(heap)
                        self.runq.append(th)
                        th.state = READY
                        self._release_cpu(th, t2)
                    elif t2 > horizon or ((n := len(heap)) > 1 and (
                            heap[1][0] <= t2 or (n > 2 and heap[2][0] <= t2))):
                        self.seq += 1
                        heapreplace(heap, (t2, self.seq, th))
                    else:
                        run_on = True           # th's next op is the next event
                    if not self.rcu_armed and rcu.callbacks:
                        self.rcu_armed = True
                        self.timer(t2 + self.profile.rcu_gp_ns, self._rcu_tick)
                    if not run_on:
                        break
                    t = t2
                if once:
                    return True
            return False
        finally:
            self.steps += steps

    def wall(self) -> float:
        """When the last (non-daemon) thread finished (simulated ns)."""
        return max((th.done_at for th in self.threads if not th.daemon), default=0.0)

    def run(self, until: float | None = None) -> None:
        """Run until every thread finished (or simulated time ``until``):
        :meth:`step` in a loop (in batches: ``_events`` runs every event up
        to ``until`` before returning)."""
        saved = enter(False, STATE.task)
        try:
            until_t = math.inf if until is None else until
            while not self._events(until_t) and self._unstick():
                pass
        finally:
            leave(saved)

    def _unstick(self) -> bool:
        """No event is left: True if a parked thread whose op is enabled
        was woken (events are queued again); False if no thread is parked
        (the run is over); a deadlock (:class:`SimError`) if some are and
        none can go."""
        if not (self.nparked or self.rcu_waiters):
            return False
        if self._rescue():
            return True
        if all(th.daemon for th in self.threads if th.state in (SPIN, SLEEP)):
            return False                 # only kswapd waits: the run is over
        stuck = "; ".join(f"{th.name} in {_pending(th).describe()}"
                          for th in self.threads if th.state in (SPIN, SLEEP))
        raise SimError(f"deadlock at t={self.now:.0f}ns: {stuck}")

    def close(self) -> None:
        """Close unfinished coroutines without warnings."""
        close(th.task for th in self.threads)

    # -- blocking --
    def _park(self, th: SimThread, op: Any, t: float) -> None:
        th.park_t = t
        if op.waits_for_gp:
            self.rcu_waiters.append(th)
            th.park_keys = ()
        else:
            keys = tuple({id(o) for o, _, _ in op.footprint() if o != "*"})
            th.park_keys = keys
            parked = self.parked
            for k in keys:
                lst = parked.get(k)
                if lst is None:
                    parked[k] = [th]
                else:
                    lst.append(th)
        self.nparked += 1
        if op.spins:
            th.state = SPIN                 # keeps its CPU, burning cycles
        else:
            th.state = SLEEP
            self._release_cpu(th, t)

    def _sleep(self, th: SimThread, ns: float, t: float) -> None:
        th.state = SLEEP
        th.sleep += ns
        self._release_cpu(th, t)

        def wake(t2: float) -> None:
            st = STATE
            st.task = th.task
            self.now = t2
            if advance(th.task) is None:
                th.cpu = None
                self._finish(th, t2)
            else:
                self._ready(th, t2)
        self.timer(t + ns, wake)

    def _unpark(self, th: SimThread) -> None:
        parked = self.parked
        for k in th.park_keys:
            lst = parked.get(k)
            if lst is not None:
                lst.remove(th)
                if not lst:
                    del parked[k]
        th.park_keys = ()
        self.nparked -= 1

    def _wake(self, th: SimThread, t: float) -> None:
        waited = t - th.park_t
        if th.state == SPIN:
            if self.observer is not None:
                self.observer.spun(th, th.park_t, t)
            th.spin += waited
            th.busy += waited
            assert th.cpu is not None
            th.cpu.busy += waited
            th.state = RUN
            self._push(t, th)
        else:
            th.sleep += waited
            self._ready(th, t + self.profile.wakeup_ns)

    def _wake_check(self, op: Any, t: float) -> None:
        parked = self.parked
        st = STATE
        me = st.task
        for o, _, _ in op.footprint():
            lst = parked.get(id(o))
            if not lst:
                continue
            for th in list(lst):
                st.task = th.task
                if _pending(th).enabled():
                    self._unpark(th)
                    if self.observer is not None:
                        self.observer.woken(th, op, t)
                    self._wake(th, t)
        st.task = me

    def _rescue(self) -> bool:
        """Nothing scheduled: wake any parked thread whose op is enabled."""
        st = STATE
        woke = False
        for th in self.threads:
            if th.state in (SPIN, SLEEP):
                st.task = th.task
                if _pending(th).enabled():
                    if th in self.rcu_waiters:
                        self.rcu_waiters.remove(th)
                        self.nparked -= 1
                    else:
                        self._unpark(th)
                    self._wake(th, self.now)
                    woke = True
        return woke

    def _rcu_tick(self, t: float) -> None:
        rcu = self.kernel.rcu
        st = STATE
        saved = st.task
        st.task = None
        rcu.process()
        for th in list(self.rcu_waiters):
            st.task = th.task
            if _pending(th).enabled():
                self.rcu_waiters.remove(th)
                self.nparked -= 1
                self._wake(th, t)
        st.task = saved
        if rcu.callbacks or self.rcu_waiters:
            self.timer(t + self.profile.rcu_gp_ns, self._rcu_tick)
        else:
            self.rcu_armed = False

    # -- mmap_lock statistics --
    def _lock_stat(self, th: SimThread, op: Any, result: Any, t: float) -> None:
        """Waits and holds of ``mmap_lock``, from what a ``lockstat`` op
        returned (``sync/rwsem.py``): Acquired — the hold starts (a
        down_* that took it at once counts a wait of 0, one granted after
        queueing the wait since it queued; a trylock counts no wait); a
        Waiter — a wait starts; None — a release ends the hold; False — a
        failed trylock."""
        sem = op.sem
        if not sem.name.startswith("mmap_lock"):
            return
        acquired = type(result) is Acquired
        if acquired and result.write:
            # ``t`` is the end of the op's charge, and a write acquisition's
            # charge ends with the write section's VMA work (cost.after()):
            # the lock was taken that long before
            t -= self.cost.vma_modify_ns
        if self.observer is not None:
            self.observer.rwsem(th, op, result, t)
        if acquired:
            write = result.write
            how = result.how
            if how == AT_ONCE:
                th.lock_write = write
                self.lock_waits.append(0.0)
                if write:
                    self.write_waits.append(0.0)
            elif how == GRANTED:
                w = t - th.lock_wait_t0
                self.lock_waits.append(w)
                if th.lock_write:
                    self.write_waits.append(w)
            th.hold_t0 = t
        elif type(result) is Waiter:
            th.lock_write = result.write
            th.lock_wait_t0 = t
        elif result is None and th.hold_t0 >= 0:
            self.lock_holds.append(t - th.hold_t0)
            th.hold_t0 = -1.0
