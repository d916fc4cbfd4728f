"""Perfetto traces of simulated runs: an observer the engine tells of every
busy interval, lock event and wakeup.

``specfault bench ... --trace FILE`` attaches one :class:`SimTrace` per run
(``Engine.observer``; None by default, when the engine pays one test per
op).  Each run is one process of the trace, named ``WORKLOAD PROTOCOL N
CPUs``, with these tracks:

``CPU i``
    What CPU *i* was busy with, as slices that never overlap and whose
    total is the CPU's busy time as the engine accounts it
    (``SimCpu.busy``: every op's charge, context switches, spinning):

    * ``fault: ...`` — one fault from the faulting access to the retry of
      the access, named by the path it took: ``classic``, ``speculative``,
      ``speculative aborted (SPF_ABORT_...) → classic``, ``VMA-locked``,
      ``VMA-locked, retry → classic``, ``VMA lock not taken → classic``.
      Nested in it, its phases: ``speculative attempt`` / ``VMA-lock
      attempt`` and ``classic fallback (mmap_lock)``.
    * ``sys_mmap``, ``sys_munmap``, ``sys_mprotect`` — a workload syscall,
      with ``mmap_lock write section`` nested where it holds the lock for
      write (from the grant, including the VMA work charged with it, to the
      end of ``up_write``).
    * ``user`` — the thread's own work and accesses that did not fault.
    * ``context switch`` — the switch charged when a CPU changes thread.
    * ``spin: ...`` (nested) — time spinning on a page-table lock, a
      sequence count or an IPI, the CPU busy.

    A fault or syscall that sleeps (a contended ``mmap_lock``) or migrates
    is cut into one slice per stretch on a CPU, each carrying the whole
    fault's name and latency.

``mmap_lock hold #k`` / ``mmap_lock wait #k``
    Each hold (``read``/``write`` and the thread) and each wait of a
    thread that slept for the lock, with the engine's own hold and wait
    times (``Engine.lock_holds``/``lock_waits``); overlapping ones on
    separate lanes ``#k``.  A flow arrow goes from the hold whose release
    woke a waiter to that waiter's wait.

``PTL hold #k`` / ``PTL wait #k``
    The same for the page-table locks (``ptl@...``): a hold from the
    acquisition to the end of ``spin_unlock``, a wait while spinning; the
    arrow from the releasing hold to each spinner it let go.

Counters: ``free frames``, ``faults/s``, ``aborts/s`` (SPF aborts and
VMA-lock failures and retries), per time bucket.

Size: every run writes at most its share of the file's event budget
(``TraceWriter.budget`` split evenly across the runs) in detail.  When the
share is used up at simulated time *T*, the detail stops (slices open then
are cut at their last busy instant and marked ``cut``; lock tracks end),
and from *T* on each CPU's busy time is summed per time bucket into
``busy (aggregated)`` slices (placed at the start of their bucket, as long
as the CPU was busy in it, with the bucket's fault count): the per-CPU
totals stay exact.  Buckets start at 1 µs and double whenever more than
256 would be needed, so memory is bounded whatever the run's length.  The
trace's ``metadata.runs`` says, per run, where the detail stopped.
"""

from __future__ import annotations

from typing import Any

from specfault.mm.access import PageFault
from specfault.report.perfetto import TraceWriter, ns
from specfault.runtime import STATE
from specfault.sync.rwsem import GRANTED, Acquired, Waiter

#: page-table lock classes (spinlock_t.lock_class) drawn on the PTL tracks
PTL_CLASSES = frozenset({"ptl", "pmd_ptl"})
_PTL_KINDS = frozenset({"spin_lock", "spin_trylock", "spin_unlock"})
#: vmstat events that decide a fault's path
_PATH_EVENTS = frozenset({"spf_attempt", "spf_abort", "spf_success", "vma_lock_success",
                          "vma_lock_abort", "vma_lock_retry", "vma_lock_miss"})
#: buckets kept for counters and aggregated busy time (doubled in width past it)
NBUCKETS = 256
#: the first bucket width, ns
BUCKET0_NS = 1000.0


def _fault_name(info: dict[str, Any]) -> str:
    attempt, out = info.get("attempt"), info.get("outcome")
    if attempt is None:
        return "fault: classic"
    if attempt == "speculative":
        if out == "ok":
            return "fault: speculative"
        if out == "abort":
            return f"fault: speculative aborted ({info.get('reason') or 'retry'}) → classic"
        return "fault: speculative"
    if out == "retry":
        return "fault: VMA-locked, retry → classic"
    if out == "abort":
        return "fault: VMA lock not taken → classic"
    return "fault: VMA-locked"


class _Frame:
    """Something a thread is doing: a root (fault, syscall, user) or a
    nested part of one.  A root collects its CPU segments (``pending``)
    until it ends, when its name is known."""

    __slots__ = ("kind", "label", "t0", "t1", "root", "pending", "info", "thread", "cut")

    def __init__(self, kind: str, label: str, t0: float, thread: str, root: _Frame | None = None) -> None:
        self.kind = kind
        self.label = label
        self.t0 = t0
        self.t1 = -1.0
        self.root = self if root is None else root
        self.pending: list[tuple[_Frame, int, float, float]] = []
        self.info: dict[str, Any] = {}
        self.thread = thread
        self.cut = False

    def name(self) -> str:
        if self.kind == "fault":
            return _fault_name(self.info)
        return self.label

    def args(self) -> dict[str, Any]:
        a: dict[str, Any] = {"thread": self.thread}
        if self.kind == "fault":
            info = self.info
            a["fault #"] = info["fault #"]
            a["path"] = _fault_name(info)[7:]
            if info.get("reason"):
                a["abort reason"] = info["reason"]
            if info.get("misses"):
                a["vma_lock_miss"] = info["misses"]
            if self.t1 >= 0:
                a["latency_us"] = round((self.t1 - self.t0) / 1000.0, 3)
        if self.root.cut:
            a["cut"] = "the trace's detail stopped here (event budget); see metadata"
        return a


class _T:
    """A simulated thread as the tracer follows it."""

    __slots__ = ("name", "stack", "cpu", "hold", "wait", "ptl", "flows_in", "last_op_t", "last_release")

    def __init__(self, name: str) -> None:
        self.name = name
        self.stack: list[_Frame] = []
        self.cpu = -1
        self.hold: tuple[float, bool] | None = None      # mmap_lock: since, write
        self.wait: tuple[float, bool] | None = None
        self.ptl: dict[int, float] = {}                  # id(lock) -> held since
        self.flows_in: list[tuple[tuple[int, int, int], int]] = []   # (source, release start ns)
        self.last_op_t = 0.0
        self.last_release: tuple[int, int, int] | None = None     # flow source of this op's release


class _C:
    __slots__ = ("th", "open", "end")

    def __init__(self) -> None:
        self.th: _T | None = None
        self.open: list[list[Any]] = []     # [frame, since]
        self.end = 0.0


class _Lanes:
    """Tracks ``label #k``: each slice goes on the first lane free at its start."""

    def __init__(self, tr: SimTrace, label: str, base: int) -> None:
        self.tr = tr
        self.label = label
        self.base = base
        self.ends: list[int] = []

    def place(self, a: int, b: int) -> int:
        ends = self.ends
        for i, e in enumerate(ends):
            if e <= a:
                ends[i] = b
                return self.base + i
        ends.append(b)
        tid = self.base + len(ends) - 1
        self.tr.w.thread(self.tr.pid, tid, f"{self.label} #{len(ends) - 1}", sort=tid)
        return tid


class _Buckets:
    """Counts per time bucket (faults, aborts, free frames; after the cut,
    busy time and faults per CPU); the width doubles to keep NBUCKETS."""

    def __init__(self) -> None:
        self.w = BUCKET0_NS
        self.hi = 0
        self.faults = [0] * NBUCKETS
        self.aborts = [0] * NBUCKETS
        self.free = [-1] * NBUCKETS
        self.busy: list[list[float]] = []
        self.cpu_faults: list[list[int]] = []

    def idx(self, t: float) -> int:
        i = int(t // self.w)
        while i >= NBUCKETS:
            self._double()
            i = int(t // self.w)
        if i > self.hi:
            self.hi = i
        return i

    def _double(self) -> None:
        half = NBUCKETS // 2

        def merge(a: list[Any]) -> list[Any]:
            return [a[2 * j] + a[2 * j + 1] for j in range(half)] + [type(a[0])(0)] * half

        self.faults = merge(self.faults)
        self.aborts = merge(self.aborts)
        f = self.free
        self.free = [f[2 * j + 1] if f[2 * j + 1] >= 0 else f[2 * j] for j in range(half)] + [-1] * half
        self.busy = [merge(b) for b in self.busy]
        self.cpu_faults = [merge(b) for b in self.cpu_faults]
        self.w *= 2
        self.hi //= 2

    def add_busy(self, cpu: int, s: float, e: float) -> None:
        while s < e:
            i = self.idx(s)
            edge = (i + 1) * self.w
            piece = e if e < edge else edge
            self.busy[cpu][i] += piece - s
            s = piece


class SimTrace:
    """The observer of one run: ``SimTrace(engine, writer, title)`` before
    ``engine.run()``, :meth:`close` after (see the module docstring)."""

    def __init__(self, engine: Any, writer: TraceWriter, title: str, budget: int | None = None) -> None:
        self.eng = engine
        self.w = writer
        self.title = title
        self.pid = writer.process(title)
        self.ncpus = len(engine.cpus)
        for i in range(self.ncpus):
            writer.thread(self.pid, i + 1, f"CPU {i}", sort=i + 1)
        self.ev0 = writer.events
        self.budget = writer.budget if budget is None else budget
        self.cpus = [_C() for _ in range(self.ncpus)]
        self.threads: dict[Any, _T] = {}
        self.cur: _T | None = None
        self.mmap_holds = _Lanes(self, "mmap_lock hold", 1000)
        self.mmap_waits = _Lanes(self, "mmap_lock wait", 2000)
        self.ptl_holds = _Lanes(self, "PTL hold", 3000)
        self.ptl_waits = _Lanes(self, "PTL wait", 4000)
        self.buckets = _Buckets()
        self.cut_at: float | None = None
        self.agg_start: list[float] = []
        kernel = engine.kernel
        self.kernel = kernel
        self.mem = kernel.mem
        self.protocol = kernel.config.fault_protocol
        self._count = kernel.count
        kernel.count = self._on_count          # instance attribute: undone by close()
        engine.observer = self
        self.closed = False
        self.nfaults = 0

    # -- threads --
    def _thread(self, task: Any) -> _T:
        T = self.threads.get(task)
        if T is None:
            T = self.threads[task] = _T(task.name)
        return T

    def _now_thread(self) -> _T | None:
        task = STATE.task
        return None if task is None else self.threads.get(task)

    # -- CPU tracks --
    def _interval(self, cpu: int, T: _T, s: float, e: float, leaf: str | None = None) -> None:
        """``T`` kept CPU ``cpu`` busy from ``s`` to ``e``."""
        if T.cpu != cpu:
            if T.cpu >= 0 and self.cpus[T.cpu].th is T:
                self._close_cpu(T.cpu)
            T.cpu = cpu
        if self.cut_at is not None:
            self.buckets.add_busy(cpu, s, e)
            return
        C = self.cpus[cpu]
        if C.th is not T or C.end != s:
            self._close_cpu(cpu)
        stack = T.stack
        if not stack:
            stack.append(_Frame("user", "user", s, T.name))
        if leaf is not None:
            stack = stack + [_Frame("spin", leaf, s, T.name, stack[0])]
        o = C.open
        i = 0
        n = min(len(o), len(stack))
        while i < n and o[i][0] is stack[i]:
            i += 1
        if i < len(o):
            self._close_open(cpu, i, s)
        for f in stack[i:]:
            o.append([f, f.t0 if f.t0 > s else s])
        C.th = T
        C.end = e

    def _close_open(self, cpu: int, i: int, at: float) -> None:
        o = self.cpus[cpu].open
        for j in range(len(o) - 1, i - 1, -1):
            f, since = o[j]
            f.root.pending.append((f, cpu, since, at))
        del o[i:]

    def _close_cpu(self, cpu: int) -> None:
        C = self.cpus[cpu]
        if C.open:
            self._close_open(cpu, 0, C.end)
        C.th = None

    def _end_root(self, T: _T, now: float) -> None:
        if not T.stack:
            return
        root = T.stack[0]
        root.t1 = now
        if T.cpu >= 0 and self.cpus[T.cpu].th is T:
            self._close_cpu(T.cpu)
        T.stack = []
        self._flush(root)

    def _flush(self, root: _Frame) -> None:
        w, pid = self.w, self.pid
        for f, cpu, s, e in root.pending:
            a, b = ns(s), ns(e)
            if b > a:
                w.slice(pid, cpu + 1, a, b - a, f.name(), f.kind, f.args())
        root.pending = []

    # -- engine hooks --
    def op(self, th: Any, cpu: int, t: float, cost: float, op: Any, result: Any) -> None:
        """``th`` ran ``op`` on ``cpu`` from ``t`` for ``cost`` ns."""
        if self.cut_at is None and self.w.events - self.ev0 >= self.budget:
            self._cut(t)
        T = self.threads.get(th.task) or self._thread(th.task)
        self.cur = T
        T.last_op_t = t
        T.last_release = None
        e = t + cost
        if type(result) is PageFault:
            self._begin_fault(T, t, e)
        elif op.kind in _PTL_KINDS and self.cut_at is None:
            self._ptl(T, op, result, t, e)
        self._interval(cpu, T, t, e)

    def switch(self, cpu: int, th: Any, t: float, cs: float) -> None:
        """CPU ``cpu`` switches to ``th`` at ``t``, for ``cs`` ns."""
        if self.cut_at is not None:
            self.buckets.add_busy(cpu, t, t + cs)
            return
        self._close_cpu(cpu)
        a, b = ns(t), ns(t + cs)
        if b > a:
            self.w.slice(self.pid, cpu + 1, a, b - a, "context switch", "sched", {"to": th.name})
        C = self.cpus[cpu]
        C.end = t + cs
        C.th = None

    def spun(self, th: Any, since: float, t: float) -> None:
        """``th`` spun on its CPU from ``since`` to ``t``."""
        T = self._thread(th.task)
        pending = th.task.pending
        kind = getattr(pending, "kind", "?")
        lock = getattr(pending, "lock", None)
        if kind == "spin_lock" and lock is not None:
            what = f"spin: {lock.name}"
        elif kind == "seq_begin":
            what = "spin: sequence count (writer inside)"
        elif kind == "ipi_wait":
            what = "spin: IPI wait"
        else:
            what = f"spin: {kind}"
        self._interval(th.cpu.id, T, since, t, what)
        if self.cut_at is None and kind == "spin_lock" and lock is not None and lock.lock_class in PTL_CLASSES:
            self._wait_slice(T, self.ptl_waits, since, t, f"{T.name} spins on {lock.name}", "ptl",
                             {"lock": lock.name, "thread": T.name})
        T.flows_in.clear()

    def woken(self, th: Any, op: Any, t: float) -> None:
        """The op just run (by the current thread) lets ``th`` go on."""
        src = self.cur.last_release if self.cur is not None else None
        if src is None or self.cut_at is not None:
            return
        T = self._thread(th.task)
        T.flows_in.append((src, ns(self.cur.last_op_t)))   # type: ignore[union-attr]

    def rwsem(self, th: Any, op: Any, result: Any, t: float) -> None:
        """An mmap_lock op of ``th``; ``t`` as the engine's lock statistics
        take it (the acquisition, or the end of the release)."""
        if self.cut_at is not None:
            return
        T = self._thread(th.task)
        if type(result) is Acquired:        # the hold starts (after a wait if granted)
            write = result.write
            if result.how == GRANTED:
                w0, _ = T.wait if T.wait is not None else (t, write)
                T.wait = None
                self._wait_slice(T, self.mmap_waits, w0, t, f"{'write' if write else 'read'} {T.name}",
                                 "mmap_lock", {"lock": op.sem.name, "thread": T.name,
                                               "mode": "write" if write else "read"})
            self._hold_begin(T, t, write)
        elif type(result) is Waiter:        # queued: the wait starts
            T.wait = (t, result.write)
        elif result is None:                # a release ends the hold
            h = T.hold
            T.hold = None
            if h is None:
                return
            h0, write = h
            a, b = ns(h0), ns(t)
            tid = self.mmap_holds.place(a, b)
            if b > a:
                self.w.slice(self.pid, tid, a, b - a, f"{'write' if write else 'read'} {T.name}",
                             "mmap_lock", {"lock": op.sem.name, "thread": T.name,
                                           "mode": "write" if write else "read",
                                           "hold_us": round((t - h0) / 1000.0, 3)})
            T.last_release = self._source(tid, a, ns(T.last_op_t), b)
            if write:
                for j in range(len(T.stack) - 1, 0, -1):
                    if T.stack[j].kind == "write":
                        del T.stack[j:]
                        break

    # -- locks --
    def _source(self, tid: int, a: int, u: int, b: int) -> tuple[int, int, int] | None:
        """A flow's start inside the hold [a, b), in its release [u, b)."""
        if b - a < 1:
            return None
        ts = min(max((u + b) // 2, a), b - 1)
        return (self.pid, tid, ts)

    def _hold_begin(self, T: _T, t: float, write: bool) -> None:
        T.hold = (t, write)
        if not write:
            return
        if not T.stack:
            T.stack.append(_Frame("user", "user", t, T.name))
        f = _Frame("write", "mmap_lock write section", t, T.name, T.stack[0])
        T.stack.append(f)
        if T.cpu < 0:
            return
        C = self.cpus[T.cpu]
        o = C.open
        # the acquiring op was recorded already: open the section inside it
        if C.th is T and len(o) == len(T.stack) - 1 and all(o[j][0] is T.stack[j] for j in range(len(o))) \
                and o and o[-1][1] <= t <= C.end:
            o.append([f, t])

    def _wait_slice(self, T: _T, lanes: _Lanes, w0: float, w1: float, name: str, cat: str,
                    args: dict[str, Any]) -> None:
        a, b = ns(w0), ns(w1)
        if b <= a:
            T.flows_in.clear()
            return
        tid = lanes.place(a, b)
        args["wait_us"] = round((w1 - w0) / 1000.0, 3)
        self.w.slice(self.pid, tid, a, b - a, name, cat, args)
        for src, rel in T.flows_in:
            lo = max(a, rel)
            ts = min(max((lo + b) // 2, a), b - 1)
            if ts >= src[2]:
                self.w.flow(src, (self.pid, tid, ts), "wakes", cat)
        T.flows_in.clear()

    def _ptl(self, T: _T, op: Any, result: Any, t: float, e: float) -> None:
        lock = op.lock
        if lock.lock_class not in PTL_CLASSES:
            return
        kind = op.kind
        if kind == "spin_unlock":
            h0 = T.ptl.pop(id(lock), None)
            if h0 is None:
                return
            a, b = ns(h0), ns(e)
            tid = self.ptl_holds.place(a, b)
            if b > a:
                self.w.slice(self.pid, tid, a, b - a, f"{T.name} holds {lock.name}", "ptl",
                             {"lock": lock.name, "thread": T.name})
            T.last_release = self._source(tid, a, ns(t), b)
        elif kind == "spin_lock" or result:
            T.ptl[id(lock)] = e

    # -- faults and syscalls (Ctx and kernel.count) --
    def _begin_fault(self, T: _T, t: float, e: float) -> None:
        self._end_root(T, t)
        root = _Frame("fault", "fault", t, T.name)
        self.nfaults += 1
        root.info["fault #"] = self.nfaults
        T.stack = [root]
        if self.protocol == "pervma":
            root.info["attempt"] = "VMA lock"
            T.stack.append(_Frame("phase", "VMA-lock attempt", e, T.name, root))

    def fault_end(self) -> None:
        """Called by the workload when the fault handler returned."""
        T = self._now_thread()
        if T is None or not T.stack or T.stack[0].kind != "fault":
            return
        now = self.eng.now
        b = self.buckets
        i = b.idx(now)
        b.faults[i] += 1
        b.free[i] = self.mem.nr_free()
        if self.cut_at is not None and T.cpu >= 0:
            b.cpu_faults[T.cpu][i] += 1
        self._end_root(T, now)

    def syscall_begin(self, name: str) -> None:
        T = self._now_thread()
        if T is None:
            return
        now = self.eng.now
        self._end_root(T, now)
        T.stack = [_Frame("syscall", name, now, T.name)]

    def syscall_end(self) -> None:
        T = self._now_thread()
        if T is not None:
            self._end_root(T, self.eng.now)

    def _on_count(self, event: str, n: int = 1) -> None:
        self._count(event, n)
        if event not in _PATH_EVENTS and not event.startswith("SPF_ABORT"):
            return
        T = self._now_thread()
        if T is None or not T.stack or T.stack[0].kind != "fault":
            return
        root = T.stack[0]
        info = root.info
        now = self.eng.now
        if event == "spf_attempt":
            info["attempt"] = "speculative"
            T.stack.append(_Frame("phase", "speculative attempt", now, T.name, root))
        elif event.startswith("SPF_ABORT"):
            info["reason"] = event
        elif event == "spf_success" or event == "vma_lock_success":
            info["outcome"] = "ok"
        elif event == "vma_lock_miss":
            info["misses"] = info.get("misses", 0) + 1
        else:                     # spf_abort, vma_lock_abort, vma_lock_retry: fall back
            out = "retry" if event == "vma_lock_retry" else "abort"
            info["outcome"] = out
            b = self.buckets
            b.aborts[b.idx(now)] += 1
            if len(T.stack) > 1 and T.stack[1].kind == "phase":
                ph = T.stack[1]
                why = info.get("reason") or ("retry" if out == "retry" else "not taken")
                ph.label = f"{ph.label}: {'aborted (' + why + ')' if ph.label.startswith('spec') else why}"
                del T.stack[1:]
            T.stack.append(_Frame("phase", "classic fallback (mmap_lock)", now, T.name, root))

    # -- the detail budget --
    def _cut(self, t: float) -> None:
        """Stop the detail: close what is open, aggregate from now on."""
        for cpu in range(self.ncpus):
            self._close_cpu(cpu)
        for T in self.threads.values():
            if T.stack:
                T.stack[0].cut = True
                self._flush(T.stack[0])
            T.flows_in.clear()
        self.cut_at = t
        self.agg_start = [C.end for C in self.cpus]
        b = self.buckets
        b.busy = [[0.0] * NBUCKETS for _ in range(self.ncpus)]
        b.cpu_faults = [[0] * NBUCKETS for _ in range(self.ncpus)]

    # -- the end --
    def close(self) -> None:
        """Flush everything, write aggregates and counters, detach."""
        if self.closed:
            return
        self.closed = True
        eng = self.eng
        for T in self.threads.values():
            if T.stack:
                end = self.cpus[T.cpu].end if T.cpu >= 0 else eng.now
                self._end_root(T, end)
        for cpu in range(self.ncpus):
            self._close_cpu(cpu)
        w, pid, b = self.w, self.pid, self.buckets
        if self.cut_at is not None:
            for cpu in range(self.ncpus):
                busy = b.busy[cpu]
                for i in range(b.hi + 1):
                    if busy[i] <= 0:
                        continue
                    start = max(i * b.w, self.agg_start[cpu])
                    a = ns(start)
                    d = ns(start + busy[i]) - a
                    if d > 0:
                        w.slice(pid, cpu + 1, a, d, "busy (aggregated)", "aggregate",
                                {"faults ended": b.cpu_faults[cpu][i], "busy_us": round(busy[i] / 1000, 3),
                                 "bucket_us": round(b.w / 1000, 3)})
        free = -1
        for i in range(b.hi + 1):
            ts = ns(i * b.w)
            w.counter(pid, ts, "faults/s", b.faults[i] / b.w * 1e9)
            w.counter(pid, ts, "aborts/s", b.aborts[i] / b.w * 1e9)
            if b.free[i] >= 0:
                free = b.free[i]
            if free >= 0:
                w.counter(pid, ts, "free frames", free)
        run = {"pid": pid, "title": self.title, "events": w.events - self.ev0,
               "event_budget": self.budget, "bucket_us": b.w / 1000.0,
               "detail": "complete" if self.cut_at is None else
               f"in detail until {self.cut_at / 1000.0:.3f} µs, then busy time aggregated per "
               f"{b.w / 1000.0:g} µs bucket per CPU (event budget reached)"}
        if self.cut_at is not None:
            run["detail_until_us"] = round(self.cut_at / 1000.0, 3)
        w.metadata.setdefault("runs", []).append(run)
        if self.kernel.__dict__.get("count") is not None:
            del self.kernel.count
        if eng.observer is self:
            eng.observer = None
