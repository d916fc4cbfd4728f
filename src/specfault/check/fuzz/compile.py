"""A fuzz program compiled into the scenarios' own kind of Scenario.

:func:`to_spec` turns a :class:`~.program.Program` into an
:class:`~specfault.check.scenarios.base.MmSpec` — setup through the public
API, one :class:`~specfault.check.scenarios.base.Step` per op — so every
execution of a fuzz program is checked exactly as the hand-written races
are: the step invariant after every step, ``check_mm`` and
``kernel_problems`` at the end, lockdep, use after free, deadlock and
livelock, and linearizability against the sequential model (whatever
properties that path gains, fuzz programs gain with it).

:func:`build` adds the coverage probe (:class:`Probe`): it watches the
model's own counters (vmstat events: the fault handler that ran, each
``SPF_ABORT_*`` reason, the per-VMA lock's aborts and retries) step by
step and, for every access, records one *combination*::

    (protocol, fault kind, abort reason, writers in flight, lock contended)

``fault kind`` is the handlers that ran (``anon``, ``zero``, ``wp_copy``,
``wp_reuse``, ``file_read`` ...; ``none`` when the access needed no fault)
and the signal it earned; ``abort reason`` the speculative or per-VMA lock
aborts on the way (``-``: none); ``writers`` the syscalls of other threads
in flight (its first op run, its last not yet) at any step of the access; ``lock contended`` the lock class the
access queued or spun on (``-``: none).  A counter is attributed to the
thread whose step incremented it: counters change only inside steps.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from specfault.check.fuzz.program import PAGE, Program, regions
from specfault.check.fuzz.vocab import FILE_PATH, VOCAB, Ctx, coverage_kind
from specfault.check.scenario import Scenario
from specfault.check.scenarios.base import MmSpec, Step
from specfault.config import Config
from specfault.constants import O_RDWR
from specfault.errors import OutOfMemory, SignalError
from specfault.mm.kernel import SPF_ABORT_REASONS
from specfault.runtime import STATE

#: vmstat events that name the fault handler that ran -> the fault kind
FAULT_EVENTS = {
    "anon_fault": "anon", "zero_page_fault": "zero", "cow_fault": "wp_copy",
    "pgreuse": "wp_reuse", "wp_shared_fault": "wp_shared", "file_read_fault": "file_read",
    "file_cow_fault": "file_cow", "file_shared_fault": "file_shared",
    "fault_around": "fault_around", "pgmajfault": "major", "oom": "oom",
    "pte_overwritten": "pte_overwritten",
    # reclaim the access met: its allocation woke kswapd, reclaimed directly;
    # a swap-in (do_swap_page)
    "kswapd_wake": "kswapd_wake", "allocstall": "direct_reclaim", "pswpin": "swapin",
}
#: vmstat events that name an abort of the lockless path -> the reason
ABORT_EVENTS = {r: r[len("SPF_ABORT_"):].lower() for r in SPF_ABORT_REASONS}
ABORT_EVENTS.update({"vma_lock_abort": "vma_lock_abort", "vma_lock_retry": "vma_lock_retry",
                     "vma_lock_miss": "vma_lock_miss"})
_WATCHED = set(FAULT_EVENTS) | set(ABORT_EVENTS)

#: frames of a fuzz machine (the window, the far window, the file, tables
#: and forks' copies fit many times over)
FRAMES = 256

Combo = tuple[str, str, str, str, str]
#: the name of the kswapd actor's task (scenarios/base.py MmSpec.build)
KSWAPD = "kswapd0"


@dataclass
class _Access:
    op: str
    events: set[str] = field(default_factory=set)
    writers: set[str] = field(default_factory=set)
    contended: str = ""
    signal: str = ""


class Probe:
    """Coverage of one execution (see the module doc); combinations go to
    ``sink``, shared by every execution of the program."""

    def __init__(self, world: Any, protocol: str, sink: set[Combo]) -> None:
        self.protocol = protocol
        self.sink = sink
        self.vmstat: dict[str, int] = world.machine.kernel.vmstat
        self.snap = dict(self.vmstat)
        self.inflight: dict[int, str] = {}
        # syscalls begun but whose first op has not run yet: [kind, armed]
        # (armed: the thread's next step runs it)
        self.starting: dict[int, list[Any]] = {}
        self.stepping = False
        self.access: dict[int, _Access] = {}
        self.ended: list[tuple[int, _Access]] = []

    async def wrap(self, t: int, op: Any, coro: Coroutine[Any, Any, Any]) -> Any:
        rec = None
        if VOCAB[op.name].syscall:
            # begun before the first step (armed) or inside a step of t (its
            # next step runs the syscall's first op)
            self.starting[t] = [coverage_kind(op), not self.stepping]
        else:
            rec = self.access[t] = _Access(op.name)
        try:
            return await coro
        except (SignalError, OutOfMemory) as exc:
            if rec is not None:
                rec.signal = type(exc).__name__
            raise
        finally:
            if rec is None:
                self.inflight.pop(t, None)
                self.starting.pop(t, None)
            else:       # recorded once this step's counters are in
                self.ended.append((t, rec))

    def after_step(self) -> None:
        vm = self.vmstat
        task = STATE.task
        t = task.tid if task is not None else -1
        # the access of the actor: one that ended in this step (its last
        # op's counters are in), else the one in progress
        rec = next((r for u, r in self.ended if u == t), None) or self.access.get(t)
        self.stepping = True
        begun = self.starting.get(t)
        if begun is not None:
            if begun[1]:
                self.inflight[t] = begun[0]
                del self.starting[t]
            else:
                begun[1] = True
        if vm != self.snap:
            snap = self.snap
            changed = [k for k, v in vm.items() if k in _WATCHED and snap.get(k) != v]
            self.snap = dict(vm)
            if rec is not None:
                rec.events.update(changed)
        if task is not None and task.name == KSWAPD:
            # kswapd is in flight from its first step after a wakeup until it
            # waits again (kswapd_wait) or ends
            op = task.pending
            if task.done or (op is not None and getattr(op, "what", "") == "kswapd_wait"):
                self.inflight.pop(t, None)
            else:
                self.inflight[t] = "kswapd"
        if self.inflight:
            for u, r in self.access.items():
                for w, what in self.inflight.items():
                    if w != u:
                        r.writers.add(what)
        if rec is not None and task is not None and not task.done:
            op = task.pending
            if op is not None and op.blocking and not op.enabled():
                lock = getattr(op, "sem", None) or getattr(op, "lock", None)
                rec.contended = getattr(lock, "lock_class", None) or type(op).__name__
        if self.ended:
            self.flush()

    def flush(self) -> None:
        for u, rec in self.ended:
            self.sink.add(combo(self.protocol, rec))
            if self.access.get(u) is rec:
                del self.access[u]
        self.ended.clear()


def combo(protocol: str, rec: _Access) -> Combo:
    kinds = sorted({FAULT_EVENTS[e] for e in rec.events if e in FAULT_EVENTS})
    if rec.signal:
        kinds.append(rec.signal)
    aborts = sorted({ABORT_EVENTS[e] for e in rec.events if e in ABORT_EVENTS})
    return (protocol, "+".join(kinds) or "none", "+".join(aborts) or "-",
            "+".join(sorted(rec.writers)) or "-", rec.contended or "-")


# ----------------------------------------------------------------- compile
def _file_data(pages: int) -> bytes:
    return b"".join(f"f{i}".encode().ljust(PAGE, b".") for i in range(pages))


def _setup(prog: Program):  # type: ignore[no-untyped-def]
    """The program's setup, run with the public API on the machine the
    races' ``make_world`` builds (an ``sf.Machine``)."""
    ctx = Ctx(prog.window, prog.file_pages)

    def setup(m: Any) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
        if prog.file_pages:
            m.create_file(FILE_PATH, _file_data(prog.file_pages))
        p = m.spawn("P")
        if prog.file_pages:
            p.open(FILE_PATH, O_RDWR)
        procs: dict[str, Any] = {"P": p}
        for i, (name, op) in enumerate(prog.setup):
            proc = procs[name]
            if op.name == "fork":
                procs[f"C{len(procs)}"] = proc.fork()
                continue
            coro = VOCAB[op.name].run(ctx, None, proc, f"S{i}".encode(), op.args)
            m.run(_quiet(coro), proc.task)
        if prog.free:
            _press(m, prog.free)
        return procs, {}, regions(prog.window)

    return setup


def _press(m: Any, free: int) -> None:
    """Memory pressure: leave ``free`` frames free; the rest of the free
    list is memory the kernel holds for good (taken off the machine, as
    the simulator's pressure workloads do) — the threads' next allocations
    meet the watermarks.  The setup's own kswapd wakeups are over."""
    mem = m.kernel.mem
    held = mem.nr_free() - free
    if held > 0:
        del mem.free_pfns[len(mem.free_pfns) - held:]
        mem.nr_frames -= held
    m.kernel.kswapd_wait = False


async def _quiet(coro: Coroutine[Any, Any, Any]) -> Any:
    """A setup op: its result (an errno, a signal) is not part of the history."""
    try:
        return await coro
    except (SignalError, OutOfMemory) as exc:
        return type(exc).__name__


def _step(ctx: Ctx, op: Any, k: int) -> Step:
    kind = VOCAB[op.name]

    def run(world: Any, t: int) -> Coroutine[Any, Any, Any]:
        coro = kind.run(ctx, world, world.thread_proc[t], f"T{t}.{k}".encode(), op.args)
        probe = getattr(world, "fuzz_probe", None)
        return coro if probe is None else probe.wrap(t, op, coro)

    return Step(op.text(), run)


def to_spec(prog: Program) -> MmSpec:
    """The program as an MmSpec (the scenarios' own data)."""
    ctx = Ctx(prog.window, prog.file_pages)
    threads = [(t.proc, [_step(ctx, op, k) for k, op in enumerate(t.ops)]) for t in prog.threads]
    exits = any(op.name == "exit" for t in prog.threads for op in t.ops)
    return MmSpec(f"fuzz.{prog.digest()}", prog.text(), _setup(prog), threads,
                  frames=FRAMES, kswapd=prog.kswapd,
                  knobs={"watermark_min": FUZZ_WMARK_MIN} if prog.free else {},
                  # a thread's exit has no sequential meaning the replay
                  # could check (as for the fault-vs-exit race)
                  linearizable=not exits)


def config_for(protocol: str, mutant: str | None) -> Config:
    from specfault.check.mutants import MUTANTS

    # a swap device, so MADV_PAGEOUT reclaims anonymous pages for real and
    # threads fault them back in (reclaim and swap-in are in every program's
    # reach)
    config = Config(fault_protocol=protocol, swap_pages=FUZZ_SWAP_PAGES)
    if mutant is not None:
        config = config.with_(**MUTANTS[mutant].knobs)
    return config


#: the fuzz machine's swap device, in pages (a program's window is <= 8 pages)
FUZZ_SWAP_PAGES = 64
#: the min watermark of a program under memory pressure (``free=N``): low
#: is one frame above, high two (page.py set_watermarks) — free=3 wakes
#: kswapd at the first allocation, free<=2 reclaims directly
FUZZ_WMARK_MIN = 2


def scenario_name(prog: Program, protocol: str, mutant: str | None) -> str:
    return f"fuzz.{prog.digest()}@{protocol}" + (f"+{mutant}" if mutant else "")


def build(prog: Program, protocol: str, mutant: str | None = None,
          sink: set[Combo] | None = None) -> Scenario:
    """The explorer scenario of ``prog`` under ``protocol`` (and a
    mutant's knobs); with ``sink``, every execution adds its coverage
    combinations to it."""
    scen = to_spec(prog).build(config_for(protocol, mutant))
    scen.name = scenario_name(prog, protocol, mutant)
    if sink is None:
        return scen
    invariant, check = scen.invariant, scen.check
    assert invariant is not None and check is not None
    first = scen.threads[0]
    first_fn = first.fn

    def start(world: Any) -> Coroutine[Any, Any, Any]:
        # the first task is made at the start of every execution, after the
        # world is built (or restored): a fresh probe for the execution
        world.fuzz_probe = Probe(world, protocol, sink)
        return first_fn(world)

    def probed_invariant(world: Any) -> Any:
        world.fuzz_probe.after_step()
        return invariant(world)

    def probed_check(world: Any) -> Any:
        world.fuzz_probe.flush()
        return check(world)

    first.fn = start
    scen.invariant, scen.check = probed_invariant, probed_check
    return scen
