"""Memory-manager scenarios: small concurrent programs on a model machine,
checked on every execution.

A :class:`MmSpec` names a setup (built sequentially, with the public API)
and a few threads, each a list of :class:`Step` s — user accesses or
syscalls — run as the model's async code under the explorer.  Each run is
checked for:

* the step invariant — every present PTE of the scenario's mms lies in a
  VMA and is no more permissive than it (a speculative commit after a
  munmap or mprotect breaks this), and no writable PTE of a private mapping
  maps a page that is not exclusively ours (broken COW);
* at every step too: the properties of :mod:`specfault.check.properties`
  — reverse-mapping consistency over the region, TLB coherence of every
  access that used a cached translation, and no lost write (every load
  returns the latest store to its address not discarded since);
* at the end, with every thread done and RCU drained: ``check_mm`` on the
  whole machine (refcounts, mapcounts, RSS, tree, tables, the reverse map
  of every PTE), no lock held and
  no RCU section open (the engine's lockdep exit check), and after every
  process exits, no leaked frame;
* linearizability: the history of steps (their results, and the final
  contents of memory) is explained by some order of the steps consistent
  with real time, replayed on the sequential model (see
  :mod:`specfault.check.linearizability`).

UseAfterFree, ModelBug and lockdep violations raised by any op are reported
by the engine itself.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

import specfault as sf
from specfault.check.invariants import kernel_problems, mm_problems
from specfault.check.linearizability import check_linearizable
from specfault.check.properties import final_properties, history_of, step_properties
from specfault.check.scenario import Env, Scenario, Thread
from specfault.config import Config
from specfault.errors import OutOfMemory, SignalError
from specfault.mm.access import mmu_walk, user_access
from specfault.mm.fault import ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE
from specfault.mm.pgtable import _PAGE_NX, _PAGE_PRESENT, pte_pfn, pte_special, pte_write
from specfault.mm.vma import VM_EXEC, VM_READ, VM_SHARED, VM_WRITE
from specfault.runtime import direct

ACCESS = {"read": ACCESS_READ, "write": ACCESS_WRITE, "exec": ACCESS_EXEC}


@dataclass(frozen=True)
class Step:
    """One operation of a thread: ``run(world, thread_index)`` returns the
    model coroutine; ``label`` names it in reports."""

    label: str
    run: Callable[[Any, int], Coroutine[Any, Any, Any]]


def access(addr_key: str, kind: str, offset: int = 0, data: bytes = b"") -> Step:
    """A user access at ``world.addr[addr_key] + offset``: read 8 bytes,
    write ``data`` (default: the thread's name), or exec."""

    def run(world: Any, t: int) -> Coroutine[Any, Any, Any]:
        addr = world.addr[addr_key] + offset
        proc = world.thread_proc[t]
        if kind == "write":
            return user_access(proc.mm, addr, ACCESS_WRITE, 0, data or world.stamp(t))
        return user_access(proc.mm, addr, ACCESS[kind], 8 if kind == "read" else 1)

    return Step(f"{kind} {addr_key}+{offset:#x}", run)


def syscall(label: str, fn: Callable[[Any, Any], Coroutine[Any, Any, Any]]) -> Step:
    """A syscall: ``fn(world, proc)`` returns the model coroutine (its
    return value is the result; a negative one an errno)."""

    def run(world: Any, t: int) -> Coroutine[Any, Any, Any]:
        return fn(world, world.thread_proc[t])

    return Step(label, run)


@dataclass
class World:
    """The machine of one execution and what setup named in it."""

    machine: sf.Machine
    procs: dict[str, Any]
    addr: dict[str, int]
    thread_proc: list[Any] = field(default_factory=list)
    clock: int = 0
    history: list[tuple[int, int, int, int, Any]] = field(default_factory=list)
    #: the scenario threads that have run all their steps (kswapd's cue)
    finished: int = 0
    region: list[tuple[int, int]] = field(default_factory=list)

    def stamp(self, t: int) -> bytes:
        return f"T{t}".encode()

    def tick(self) -> int:
        self.clock += 1
        return self.clock


@dataclass
class MmSpec:
    """A scenario family: instantiate with a protocol and a mutant."""

    name: str
    description: str
    #: setup(machine) -> (procs by name, addresses by name, region ranges)
    setup: Callable[[sf.Machine], tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]]
    #: per thread: (process name, steps)
    threads: list[tuple[str, list[Step]]]
    #: which protocols it applies to (default all)
    protocols: tuple[str, ...] = ("classic", "speculative", "pervma", "dufour")
    #: config changes the scenario itself needs (e.g. recycled VMAs)
    knobs: dict[str, Any] = field(default_factory=dict)
    #: number of frames for the machine
    frames: int = 64
    #: check linearizability (off for scenarios whose results are
    #: order-free by construction)
    linearizable: bool = True
    #: run kswapd as one more actor: a kernel thread (no mm) that sleeps
    #: until an allocation wakes it (below the low watermark) and then
    #: reclaims (mm/vmscan.py balance_pgdat), interleaved by the explorer
    #: with the scenario's threads; it ends when they have all finished
    kswapd: bool = False
    #: run kcompactd as one more actor: a kernel thread (no mm) that makes
    #: one compaction pass (mm/migrate.py compact_zone: every movable folio
    #: below the free scanner migrated, through migration entries),
    #: interleaved by the explorer with the scenario's threads
    kcompactd: bool = False

    def build(self, config: Config) -> Scenario:
        spec = self
        config = config.with_(nr_frames=self.frames,
                              nr_cpus=max(2, len(self.threads) + int(self.kswapd)
                                          + int(self.kcompactd)),
                              **self.knobs)

        def setup(env: Env) -> World:
            world = make_world(spec, config)
            history_of(world)           # record accesses from the first step
            env.cpus = world.machine.kernel.cpus
            env.use_rcu(world.machine.kernel.rcu)
            return world

        threads = [Thread(f"T{i}:{pname}", _thread_fn(i, steps), cpu=i,
                          mm=_mm_of(i))
                   for i, (pname, steps) in enumerate(self.threads)]
        if self.kswapd:
            threads.append(Thread("kswapd0", _kswapd_fn(len(self.threads)),
                                  cpu=len(self.threads)))
        if self.kcompactd:
            threads.append(Thread("kcompactd0", _kcompactd_fn,
                                  cpu=len(self.threads) + int(self.kswapd)))

        def invariant(world: World) -> str | None:
            return step_invariant(world)

        def check(world: World) -> str | None:
            bad = final_check(world)
            if bad:
                return bad
            if spec.linearizable:
                return linearizability(spec, config, world)
            return None

        return Scenario(name=f"mm.{self.name}", setup=setup, threads=threads, check=check,
                        invariant=invariant, observe=observe, rcu=True,
                        description=self.description, tags=("mm",), clock=_clock,
                        snapshot=True)


def _clock(world: World) -> int:
    """The history's clock: each step's start and end ticks are taken in
    the code between ops, so DPOR must see who moved it (see
    ``Scenario.clock``)."""
    return world.clock


def make_world(spec: MmSpec, config: Config) -> World:
    """Build the machine and run the spec's setup sequentially."""
    machine = sf.Machine(config=config)
    procs, addr, region = spec.setup(machine)
    world = World(machine, procs, addr, region=region)
    for pname, _ in spec.threads:
        proc = procs[pname]
        world.thread_proc.append(proc)
    # every thread is a user of its mm (speculation needs mm_users > 1)
    for proc in {id(p): p for p in world.thread_proc}.values():
        users = sum(1 for p in world.thread_proc if p is proc)
        proc.mm.mm_users = max(proc.mm.mm_users, users)
    return world


def _mm_of(i: int) -> Callable[[World], Any]:
    return lambda world: world.thread_proc[i].mm


def _thread_fn(i: int, steps: list[Step]) -> Callable[[World], Coroutine[Any, Any, Any]]:
    async def body(world: World) -> None:
        for k, step in enumerate(steps):
            start = world.tick()
            result = await run_step(step, world, i)
            world.history.append((i, k, start, world.tick(), result))
        world.finished += 1

    return body


def _kswapd_fn(nthreads: int) -> Callable[[World], Coroutine[Any, Any, Any]]:
    """kswapd(): sleep until woken (an allocation below the low watermark
    set ``kswapd_wait``), balance the node, sleep again — until the
    scenario's ``nthreads`` threads are done (and kswapd is not woken)."""
    from specfault.mm.vmscan import kswapd_run
    from specfault.runtime import WaitUntil

    async def body(world: World) -> None:
        kernel = world.machine.kernel
        while True:
            await WaitUntil(lambda: kernel.kswapd_wait or world.finished == nthreads,
                            "kswapd_wait", (kernel,))
            if not kernel.kswapd_wait:
                return
            await kswapd_run(kernel)

    return body


async def _kcompactd_fn(world: World) -> None:
    """kcompactd(): one wakeup (kcompactd_do_work), whenever the explorer
    runs it — before, during or after the scenario's threads."""
    from specfault.mm.migrate import kcompactd_do_work
    await kcompactd_do_work(world.machine.kernel)


async def run_step(step: Step, world: Any, t: int) -> Any:
    """Run one step; its result as a comparable value."""
    try:
        ret = await step.run(world, t)
    except SignalError as exc:
        return ("signal", type(exc).__name__, exc.si_code)
    except OutOfMemory:
        return ("oom",)
    if isinstance(ret, int) and ret < 0:
        return ("errno", -ret)
    return ret


def replay_step(spec: MmSpec, world: World, t: int, k: int) -> Any:
    """Run step ``k`` of thread ``t`` alone on ``world`` with the direct
    driver (then its RCU callbacks); its result as :func:`run_step` gives
    it.  The sequential model the linearizability check replays."""
    step = spec.threads[t][1][k]
    proc = world.thread_proc[t]
    rcu = world.machine.kernel.rcu
    try:
        return direct.run(run_step(step, world, t), proc.task)
    finally:
        if rcu.callbacks:
            rcu.process()


def linearizability(spec: MmSpec, config: Config, world: World) -> str | None:
    """None if the run's history is linearizable (see
    :mod:`specfault.check.linearizability`), else a message."""
    return check_linearizable((spec.name, repr(config)), world.history, final_observation(world),
                              fresh=lambda: make_world(spec, config),
                              run_one=lambda w, t, k: replay_step(spec, w, t, k),
                              observe=final_observation)


# --------------------------------------------------------------- properties
def step_invariant(world: World) -> str | None:
    """Cheap per-step check of the scenario's region (see module doc)."""
    mem = world.machine.kernel.mem
    for proc in world.procs.values():
        mm = proc.mm
        # a writer inside mmap_lock may be between changing a VMA and
        # fixing its PTEs (as in Linux); judge the mm when none is inside
        if mm.dead or mm.mmap_lock.writer is not None or mm.mm_lock_seq & 1:
            continue
        for lo, hi in world.region:
            for addr in range(lo, hi, 4096):
                table = mmu_walk(mm, addr)          # what the MMU would load
                if table is None:
                    continue
                pte = table.entries[(addr >> 12) & 511]
                if not pte or not pte & _PAGE_PRESENT:
                    continue
                vma = mm.mm_mt.find(addr)
                if vma is None or vma.vm_start > addr:
                    return f"{mm.label()}: PTE {pte:#x} at {addr:#x} maps memory outside any VMA"
                flags = vma.vm_flags
                if pte_write(pte) and not flags & VM_WRITE:
                    return f"{mm.label()}: writable PTE at {addr:#x} in read-only {vma.label()}"
                if not flags & (VM_READ | VM_WRITE | VM_EXEC):
                    return f"{mm.label()}: accessible PTE at {addr:#x} in PROT_NONE {vma.label()}"
                if not pte & _PAGE_NX and not flags & VM_EXEC:
                    return f"{mm.label()}: executable PTE at {addr:#x} in {vma.label()}"
                if pte_write(pte) and not flags & VM_SHARED and not pte_special(pte):
                    page = mem.pages.get(pte_pfn(pte))
                    if page is None:
                        return f"{mm.label()}: PTE at {addr:#x} maps a freed frame"
                    if not page.anon_exclusive:
                        return (f"{mm.label()}: writable PTE at {addr:#x} maps a shared page "
                                f"{page!r}: a write would reach another mm (COW broken)")
    # rmap consistency, TLB coherence, no lost write (check/properties.py)
    return step_properties(world)


def final_check(world: World) -> str | None:
    kernel = world.machine.kernel
    bad = final_properties(world)
    if bad:
        return bad
    problems = kernel_problems(kernel)
    for mm in kernel.mms:
        problems += mm_problems(mm)
    if problems:
        return "check_mm: " + "; ".join(problems[:4])
    return None


def final_observation(world: World) -> tuple[Any, ...]:
    """What user space can see at the end: each process's maps and the
    first bytes of every page of the region (or the signal reading it)."""
    out: list[Any] = []
    for name in sorted(world.procs):
        proc = world.procs[name]
        if proc.mm.dead:
            out.append((name, "exited"))
            continue
        pages = []
        for lo, hi in world.region:
            for addr in range(lo, hi, 4096):
                try:
                    pages.append(proc.read(addr, 8))
                except SignalError as exc:
                    pages.append((type(exc).__name__, exc.si_code))
        out.append((name, proc.maps(), tuple(pages)))
    return tuple(out)


def observe(world: World) -> Hashable:
    return tuple(sorted((t, k, repr(r)) for t, k, _, _, r in world.history))
