"""Simulate a trace: the recorded tasks as threads of the simulator.

Each task of the trace becomes a simulated thread (sim/engine.py) that runs
its own events, in order, as model code on a simulated CPU:

* before each event, the CPU time the task spent on the host since its
  previous one (``run``: user code, the syscalls the trace does not keep)
  as CPU work, and the time it was blocked (``wait``: futexes, I/O, sleep)
  off the CPU — both from perf's context-switch records;
* the event itself through the model: the syscall (``sys_mmap``...), the
  access that faults (``UserAccess`` and ``do_user_addr_fault``, timed),
  the exec (mm/exec.py), the fork (``dup_mmap``), the exit (``exit_mmap``
  with the last task of an mm); a clone starts the child's thread.

The order across threads that the trace implies is kept (:func:`plan`):
the mm's writers (mmap, munmap, mprotect, mremap, madvise, brk, fork, exec)
run in their recorded order — so each mmap returns the address it did on
the host —, and a fault waits for the last writer that changed the range it
falls in, if another task did that.  A thread waiting so sleeps; its time is
reported (``dep_wait``).  Nothing else is forced: the threads contend for
the simulated CPUs, ``mmap_lock``, the VMA locks, page tables and cache
lines as the protocol makes them.

What is reported, per protocol and CPU count, is sim/metrics.py's
``RunResult`` (completion time = the simulated time from the exec to the
last task's end, mmap_lock wait and hold, fault and mmap-writer latencies,
abort reasons) beside the host's recorded duration, plus a per-thread
timeline for plots.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from specfault.config import Config
from specfault.constants import MAP_ANONYMOUS, MAP_HUGETLB, PAGE_SIZE
from specfault.errors import SignalError
from specfault.mm.access import user_access
from specfault.mm.fork import dup_mmap, exit_mmap
from specfault.mm.gup import mm_populate
from specfault.mm.madvise import sys_madvise
from specfault.mm.mm_struct import MmStruct
from specfault.mm.mmap import page_align, sys_brk, sys_mmap, sys_munmap
from specfault.mm.mprotect import sys_mprotect
from specfault.mm.mremap import sys_mremap
from specfault.runtime import STATE, Op, Work
from specfault.sim.cost import CostProfile
from specfault.sim.engine import Engine, SimSleep
from specfault.sim.metrics import RunResult, collect
from specfault.sim.workloads import Built, Ctx
from specfault.trace import format as fmt
from specfault.trace.describe import access_of
from specfault.trace.replay import UNSUPPORTED, Replayer

CLONE_VM = 0x100
#: syscalls that change an mm's layout: its writers, kept in recorded order
WRITERS = frozenset({"mmap", "munmap", "mprotect", "pkey_mprotect", "mremap", "madvise", "brk"})
ACCESS = {"read": 0, "write": 1, "exec": 2}
#: at most this many timeline intervals are kept per run (for plots)
MAX_TIMELINE = 200_000


# ------------------------------------------------------------ dependencies
class Dep:
    """An event other threads wait for; ``done`` once it ran in the sim."""

    __slots__ = ("done", "label")

    def __init__(self, label: str) -> None:
        self.done = False
        self.label = label


class WaitDep(Op):
    """Sleep until ``dep`` has run (a trace-order wait, off the CPU)."""

    __slots__ = ("dep",)
    blocking = True
    kind = "trace_wait"

    def __init__(self, dep: Dep) -> None:
        self.dep = dep

    def enabled(self) -> bool:
        return self.dep.done

    def perform(self) -> None:
        return None

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.dep, "done", "r"),)

    def describe(self) -> str:
        return f"wait for {self.dep.label}"


class MarkDep(Op):
    """``dep`` has run: wake its waiters."""

    __slots__ = ("dep",)
    kind = "trace_mark"

    def __init__(self, dep: Dep) -> None:
        self.dep = dep

    def perform(self) -> None:
        self.dep.done = True

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.dep, "done", "w"),)

    def describe(self) -> str:
        return f"done {self.dep.label}"


@dataclass
class Step:
    ev: dict[str, Any]
    deps: list[Dep] = field(default_factory=list)
    mark: Dep | None = None


class _Painter:
    """Which event last changed each address range of one mm (an interval
    map: sorted starts, each with its end and its writer)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.items: list[tuple[int, int, Any]] = []

    def paint(self, lo: int, hi: int, who: Any) -> None:
        if hi <= lo:
            return
        keep: list[tuple[int, int, Any]] = []
        i = bisect.bisect_right(self.starts, lo) - 1
        i = max(i, 0)
        j = i
        while j < len(self.items) and self.items[j][0] < hi:
            s, e, w = self.items[j]
            if e > lo:
                if s < lo:
                    keep.append((s, lo, w))
                if e > hi:
                    keep.append((hi, e, w))
            else:
                keep.append((s, e, w))
            j += 1
        new = sorted(keep + [(lo, hi, who)])
        self.items[i:j] = new
        self.starts[i:j] = [x[0] for x in new]

    def who(self, addr: int) -> Any:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and self.items[i][0] <= addr < self.items[i][1]:
            return self.items[i][2]
        return None


def _ranges(ev: dict[str, Any], brk: dict[int, int], mm: int) -> list[tuple[int, int]]:
    """The address ranges a writer event changed (from its arguments and
    the result the host gave)."""
    a, ret, name = ev["args"], ev.get("ret", -1), ev["name"]
    if name == "mmap":
        return [(ret, ret + page_align(a[1]))] if 0 <= ret < 1 << 47 else []
    if name in ("munmap", "mprotect", "pkey_mprotect", "madvise"):
        return [(a[0], a[0] + page_align(a[1]))]
    if name == "mremap":
        out = [(a[0], a[0] + page_align(a[1]))]
        if 0 <= ret < 1 << 47:
            out.append((ret, ret + page_align(a[2])))
        return out
    if name == "brk":
        lo = brk.setdefault(mm, ret)
        brk[mm] = max(brk[mm], ret)
        return [(min(lo, ret), page_align(brk[mm]))]
    return []


def plan(trace: fmt.Trace) -> tuple[dict[int, list[Step]], int]:
    """Each task's steps with the waits the trace's cross-thread order
    needs (see the module docstring).  Returns (steps by tid, root tid)."""
    steps: dict[int, list[Step]] = {}
    mm_of: dict[int, int] = {}
    last_writer: dict[int, tuple[int, Step]] = {}        # mm -> (tid, step)
    painters: dict[int, _Painter] = {}
    brk: dict[int, int] = {}
    next_mm = 0
    root = trace.events[0]["tid"]

    def need(step: Step, on: tuple[int, Step], tid: int) -> None:
        other_tid, other = on
        if other_tid == tid:
            return                            # the task's own order keeps it
        if other.mark is None:
            other.mark = Dep(f"[{other_tid}] {other.ev['k']} {other.ev.get('name', '')} "
                             f"at {other.ev['t'] / 1e6:.3f} ms")
        if other.mark not in step.deps:
            step.deps.append(other.mark)

    def writer(step: Step, tid: int, mm: int) -> None:
        prev = last_writer.get(mm)
        if prev is not None:
            need(step, prev, tid)
        last_writer[mm] = (tid, step)

    for ev in trace.events:
        tid = ev["tid"]
        step = Step(ev)
        steps.setdefault(tid, []).append(step)
        k = ev["k"]
        if k == "exec":
            mm_of[tid] = next_mm
            painters[next_mm] = _Painter()
            painters[next_mm].paint(0, 1 << 47, (tid, step))
            last_writer[next_mm] = (tid, step)
            next_mm += 1
            continue
        mm = mm_of.get(tid)
        if mm is None:
            continue
        if k == "sys" and ev["name"] in WRITERS:
            writer(step, tid, mm)
            for lo, hi in _ranges(ev, brk, mm):
                painters[mm].paint(lo, hi, (tid, step))
        elif k == "fault":
            who = painters[mm].who(ev["addr"])
            if who is not None:
                need(step, who, tid)
        elif k == "clone":
            flags = ev.get("flags")
            shared = bool(flags & CLONE_VM) if flags is not None else ev["child_pid"] != ev["child"]
            if shared:
                mm_of[ev["child"]] = mm
            else:
                writer(step, tid, mm)             # dup_mmap write-locks the parent
                mm_of[ev["child"]] = next_mm
                painters[next_mm] = _Painter()
                painters[next_mm].paint(0, 1 << 47, (tid, step))
                last_writer[next_mm] = (tid, step)
                next_mm += 1
    return steps, root


class _Watch:
    """user_access()'s stopwatch for one thread: each fault's latency and
    its place on the timeline."""

    __slots__ = ("sim", "tid")

    def __init__(self, sim: TraceSim, tid: int) -> None:
        self.sim = sim
        self.tid = tid

    def start(self) -> float:
        return float(self.sim.eng.now)

    def fault_done(self, t0: float) -> None:
        sim = self.sim
        sim.ctx.faults += 1
        sim.ctx.fault_lat.append(sim.eng.now - t0)
        sim._mark(self.tid, "fault", t0)


# --------------------------------------------------------------- the run
@dataclass
class TraceRun:
    """One simulated run of a trace, with what the trace adds to RunResult."""

    result: RunResult
    host_ns: int                          # the recorded duration (exec to the last event)
    host_cpus: int
    tasks: int
    dep_wait_us: float                    # time threads waited for the trace's order
    mismatches: int                       # syscall results / signals unlike the host's
    unsupported: dict[str, int]
    timeline: list[tuple[int, str, float, float]] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = self.result.to_dict()
        out.update({"host_ms": self.host_ns / 1e6, "host_cpus": self.host_cpus,
                    "tasks": self.tasks, "dep_wait_us": self.dep_wait_us,
                    "mismatches": self.mismatches, "unsupported": self.unsupported,
                    "seconds": round(self.seconds, 3)})
        out.pop("workload", None)
        return out


class TraceSim:
    def __init__(self, trace: fmt.Trace, protocol: str, cpus: int,
                 profile: CostProfile | None = None, name: str = "trace") -> None:
        self.trace = trace
        self.name = name
        self.rep = Replayer(trace, protocol, name, Config().with_(nr_cpus=cpus))
        self.m = self.rep.m
        self.eng = Engine(self.m, profile)
        self.ctx = Ctx(self.eng, self.m, 1)
        self.steps, self.root = plan(trace)
        self.users: dict[int, int] = {}                  # id(mm) -> live tasks
        self.mismatches = 0
        self.dep_wait = 0.0
        self.timeline: list[tuple[int, str, float, float]] = []
        self.names = {tid: t.get("comm", "") for tid, t in trace.tasks.items()}
        self.unsupported: dict[str, int] = {}

    def _mark(self, tid: int, kind: str, t0: float) -> None:
        if len(self.timeline) < MAX_TIMELINE:
            self.timeline.append((tid, kind, t0, self.eng.now))

    def build(self) -> Built:
        mm = MmStruct(self.m.kernel)
        self.m.kernel.mms.append(mm)
        self.users[id(mm)] = 1
        self.eng.spawn(f"[{self.root}]", mm, self.task(self.root, mm))
        n = len(self.steps)
        return Built(self.eng, self.ctx, n, n)

    async def task(self, tid: int, mm: Any) -> None:
        eng = self.eng
        for st in self.steps.get(tid, ()):
            ev = st.ev
            run, wait = ev.get("run", 0), ev.get("wait", 0)
            if run:
                await Work("user_ns", int(run))
            if wait:
                t0 = eng.now
                await SimSleep(float(wait))
                self._mark(tid, "blocked", t0)
            for d in st.deps:
                if not d.done:
                    t0 = eng.now
                    await WaitDep(d)
                    self.dep_wait += eng.now - t0
                    self._mark(tid, "order", t0)
            mm = await self.do(tid, st, mm)
            if st.mark is not None:
                await MarkDep(st.mark)
            if mm is None:
                return

    async def do(self, tid: int, st: Step, mm: Any) -> Any:
        """Run one event; returns the task's mm afterwards (None: it exited)."""
        ev = st.ev
        k = ev["k"]
        eng = self.eng
        t0 = eng.now
        if k == "fault":
            await self.fault(tid, mm, ev["addr"], ev["err"], ev.get("sig"))
            return mm
        if k == "sys":
            await self.syscall(tid, mm, ev)
            return mm
        if k == "exec":
            new = MmStruct(self.m.kernel)
            self.m.kernel.mms.append(new)
            new.mmap_min_addr = self.rep.mmap_min_addr
            await self._leave(mm)
            self.users[id(new)] = 1
            if STATE.task is not None:
                STATE.task.mm = new                       # the task's mm from now on
            await self.rep.exec_steps(new, ev)
            for addr, err in ev.get("kfaults", ()):
                await self.fault(tid, new, addr, err, None)
            self._mark(tid, "exec", t0)
            return new
        if k == "clone":
            flags = ev.get("flags")
            shared = bool(flags & CLONE_VM) if flags is not None else ev["child_pid"] != ev["child"]
            child = ev["child"]
            if shared:
                cmm = mm
                mm.mm_users += 1
                self.users[id(mm)] = self.users.get(id(mm), 0) + 1
            else:
                await Work("syscall")
                cmm = await dup_mmap(mm)
                cmm.mmap_min_addr = self.rep.mmap_min_addr
                self.users[id(cmm)] = 1
                self.ctx.writer_lat.append(eng.now - t0)
                self._mark(tid, "writer", t0)
            eng.spawn(f"[{child}] {self.names.get(child, '')}", cmm, self.task(child, cmm),
                      at=eng.now)
            return mm
        if k == "exit":
            await self._leave(mm)
            return None
        if k == "signal":
            self.unsupported[f"signal {ev['sig']}"] = self.unsupported.get(f"signal {ev['sig']}", 0) + 1
        return mm

    async def _leave(self, mm: Any) -> None:
        n = self.users.get(id(mm), 0) - 1
        self.users[id(mm)] = n
        if n > 0:
            mm.mm_users = max(1, mm.mm_users - 1)
        elif not mm.dead and mm.map_count:
            await exit_mmap(mm)

    async def fault(self, tid: int, mm: Any, addr: int, err: int, sig: Any) -> None:
        """The access, through the MMU and the fault-retry loop; each fault
        it takes is timed (from the access to the handler's return)."""
        access = ACCESS[access_of(err)]
        got_sig = None
        try:
            await user_access(mm, addr, access, 1 if access == 0 else 0, b"",
                              watch=_Watch(self, tid))
        except SignalError as exc:
            got_sig = [exc.signo, exc.si_code]
            self.ctx.faults += 1
        if got_sig != sig:
            self.mismatches += 1

    async def syscall(self, tid: int, mm: Any, ev: dict[str, Any]) -> None:
        name, a = ev["name"], ev["args"]
        if name in UNSUPPORTED:
            self.unsupported[name] = self.unsupported.get(name, 0) + 1
            return
        if name not in WRITERS and name != "ftruncate":
            return
        eng = self.eng
        t0 = eng.now
        await Work("syscall")
        ret: Any = None
        if name == "mmap":
            flags = a[3]
            file = None
            if not flags & MAP_ANONYMOUS:
                if "file" not in ev:
                    self.unsupported["mmap of an unidentified fd"] = \
                        self.unsupported.get("mmap of an unidentified fd", 0) + 1
                    return
                file = self.rep.open_file(ev["file"], ev.get("fmode"), flags, a[2], ev.get("ofd"))
            elif flags & MAP_HUGETLB:
                self.unsupported["mmap MAP_HUGETLB"] = self.unsupported.get("mmap MAP_HUGETLB", 0) + 1
                return
            ret, populate = await sys_mmap(mm, a[0], a[1], a[2], flags, file, a[5] >> 12)
            if ret >= 0 and file is not None:
                self.rep.cache(file.inode, a[5] >> 12, (a[1] + PAGE_SIZE - 1) >> 12)
            if ret >= 0 and populate:
                await mm_populate(mm, ret, populate)
            if file is not None:
                self.m.kernel.fs.fput(file)
        elif name == "munmap":
            ret = await sys_munmap(mm, a[0], a[1])
        elif name in ("mprotect", "pkey_mprotect"):
            ret = await sys_mprotect(mm, a[0], a[1], a[2])
        elif name == "mremap":
            ret = await sys_mremap(mm, a[0], a[1], a[2], a[3], a[4])
        elif name == "madvise":
            adv = a[2] & 0xFFFFFFFF
            adv = adv - (1 << 32) if adv >= 1 << 31 else adv
            ret = await sys_madvise(mm, a[0], a[1], adv)
        elif name == "brk":
            ret = await sys_brk(mm, a[0])
        elif name == "ftruncate":
            return
        self.ctx.syscalls += 1
        self.ctx.writer_lat.append(eng.now - t0)
        self._mark(tid, "writer", t0)
        if ret != ev["ret"]:
            self.mismatches += 1

    def run(self) -> TraceRun:
        t = time.monotonic()
        built = self.build()
        try:
            self.eng.run()
        finally:
            self.eng.close()
        res = collect("trace", self.rep.res.protocol, len(self.m.kernel.cpus), built)
        res.threads = len(self.steps)
        h = self.trace.header
        return TraceRun(res, int(h.get("duration_ns", 0)), int(h.get("cpus", 0)), len(self.steps),
                        self.dep_wait * 1e-3, self.mismatches, self.unsupported, self.timeline,
                        self.names, time.monotonic() - t)


def simulate(trace: fmt.Trace, protocol: str, cpus: int, profile: CostProfile | None = None,
             name: str = "trace") -> TraceRun:
    """One simulated run of ``trace`` (see the module docstring)."""
    return TraceSim(trace, protocol, cpus, profile, name).run()


def sweep(trace: fmt.Trace, protocols: list[str], cpus: list[int],
          profile: CostProfile | None = None, name: str = "trace",
          progress: Callable[[str], None] | None = None) -> Iterator[TraceRun]:
    """Every (CPU count, protocol) run, in that order."""
    for n in cpus:
        for p in protocols:
            run = simulate(trace, p, n, profile, name)
            if progress is not None:
                progress(f"{p} {n} CPUs")
            yield run
