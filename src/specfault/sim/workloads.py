"""The workloads the kernel community measures fault scalability with.

Each workload builds a model machine (``Config(fault_protocol=...)``),
sets up its address space with the synchronous API (as a process would
before it starts its threads), then spawns its threads on the engine as
model coroutines.  Threads touch memory with the model's own MMU op and
fault handler (:meth:`Ctx.touch` is ``user_access`` with a stopwatch), and
call the model's syscalls.  Every thread counts as a user of its mm, so the
speculative protocol speculates (it never does when ``mm_users == 1``).

=============  ===========================================================
``pft``        one big anonymous region split among the threads; each
               write-faults its slice (Lespinasse's and Gorman's runs)
``page_fault1``  will-it-scale: mmap a chunk, write every page, munmap, repeat
``page_fault2``  the same on a private file mapping (COW faults)
``page_fault3``  the same on a shared file mapping
``mmap1``      will-it-scale: mmap + munmap, no touch (writers only)
``ebizzy``     ebizzy -mTRp: records mmap'ed, touched, munmap'ed, random sizes
``spf_test``   Suren's test: T threads x 2 VMAs x 10 pages, mmap and fault
               at the same time
``app_launch`` many threads faulting in existing mappings while loader
               threads mmap/mprotect, memory below the reclaim watermark —
               the seed's motivating case
``pressure``   one thread faulting through a region larger than memory (swap,
               kswapd, direct reclaim) beside an mmap/munmap writer — the
               seed's case, measured as the writer's latency
=============  ===========================================================

Parameters are keyword arguments with defaults (see :data:`WORKLOADS`);
``faults`` scales the amount of work.  Nothing here depends on the
protocol.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import specfault as sf
from specfault.config import Config
from specfault.constants import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from specfault.mm.access import user_access
from specfault.mm.fault import ACCESS_READ, ACCESS_WRITE
from specfault.mm.mmap import sys_mmap, sys_munmap
from specfault.mm.mprotect import sys_mprotect
from specfault.runtime import Work
from specfault.sim.cost import CostProfile
from specfault.sim.engine import Engine, SimSleep

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


class Ctx:
    """What a workload's threads use: timed touches and syscalls."""

    def __init__(self, engine: Engine, machine: sf.Machine, seed: int) -> None:
        self.engine = engine
        self.machine = machine
        self.rng = random.Random(seed)
        self.fault_lat: list[float] = []
        self.writer_lat: list[float] = []
        self.faults = 0
        self.accesses = 0
        self.syscalls = 0

    async def touch(self, mm: Any, addr: int, write: bool = True, data: bytes = b"") -> None:
        """One user access (``user_access``), timing each fault it takes
        (this context is its stopwatch: :meth:`start`, :meth:`fault_done`);
        a write stores ``data`` (none: the page stays zero-filled)."""
        self.accesses += 1
        if write:
            await user_access(mm, addr, ACCESS_WRITE, len(data), data, None, self)
        else:
            await user_access(mm, addr, ACCESS_READ, 1, b"", None, self)

    def start(self) -> float:
        """``user_access`` is about to try the access: the time now."""
        return self.engine.now

    def fault_done(self, t0: float) -> None:
        """``user_access`` handled a fault: its latency, from the attempt
        (at ``t0``) that faulted to the handler's return."""
        self.faults += 1
        self.fault_lat.append(self.engine.now - t0)
        if self.engine.observer is not None:
            self.engine.observer.fault_end()

    async def user(self, ns: float) -> None:
        """User-space work between memory operations."""
        if ns > 0:
            await Work("user_ns", int(ns))

    async def sleep(self, ns: float) -> None:
        """Off-CPU time (I/O, binder): the thread leaves its CPU."""
        if ns > 0:
            await SimSleep(ns)

    async def _timed(self, coro: Coroutine[Any, Any, Any]) -> Any:
        eng = self.engine
        t0 = eng.now
        if eng.observer is not None:
            eng.observer.syscall_begin(getattr(coro, "__name__", "syscall"))
        await Work("syscall")
        ret = await coro
        self.syscalls += 1
        self.writer_lat.append(eng.now - t0)
        if eng.observer is not None:
            eng.observer.syscall_end()
        return ret

    async def mmap(self, mm: Any, length: int, prot: int = RW, flags: int = ANON,
                   file: Any = None, pgoff: int = 0) -> int:
        addr, _ = await self._timed(sys_mmap(mm, 0, length, prot, flags, file, pgoff))
        if addr < 0:
            raise RuntimeError(f"workload mmap failed: {addr}")
        return int(addr)

    async def munmap(self, mm: Any, addr: int, length: int) -> None:
        ret = await self._timed(sys_munmap(mm, addr, length))
        if ret < 0:
            raise RuntimeError(f"workload munmap failed: {ret}")

    async def mprotect(self, mm: Any, addr: int, length: int, prot: int) -> None:
        ret = await self._timed(sys_mprotect(mm, addr, length, prot))
        if ret < 0:
            raise RuntimeError(f"workload mprotect failed: {ret}")


@dataclass
class Built:
    """A workload ready to run: the engine and the context it reports into."""

    engine: Engine
    ctx: Ctx
    threads: int
    fault_threads: int


def machine_for(protocol: str, cpus: int, frames: int, config: Config | None = None) -> sf.Machine:
    """The machine a workload runs on: ``config`` (its knobs: a mutant, a
    cost variant) with the protocol, CPU count and memory size of the run.
    The protocol's preset follows ``protocol`` (see config.py)."""
    base = config if config is not None else Config()
    return sf.Machine(config=base.with_(nr_cpus=cpus, fault_protocol=protocol, nr_frames=frames))


def _setup(protocol: str, cpus: int, frames: int, profile: CostProfile | None,
           seed: int, config: Config | None) -> tuple[sf.Machine, Engine, Ctx]:
    m = machine_for(protocol, cpus, frames, config)
    eng = Engine(m, profile)
    return m, eng, Ctx(eng, m, seed)


def _users(mm: Any, n: int) -> None:
    mm.mm_users = max(mm.mm_users, n)


def _split(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


# ------------------------------------------------------------------ pft
def pft(protocol: str, cpus: int, *, faults: int = 100_000, threads: int = 0,
        think_ns: float = 100.0, vma_per_thread: bool = False, vmas: int = 1,
        profile: CostProfile | None = None, seed: int = 1,
        config: Config | None = None) -> Built:
    """pft: one region of ``faults`` pages; ``threads`` (default: one per
    CPU) each write-fault their contiguous slice once.

    ``vmas`` splits the region into that many VMAs (consecutive threads
    share one; ``vma_per_thread=True`` means one VMA per thread — the
    shape of pft/will-it-scale runs where each thread maps its own
    memory).  The VMAs are cut apart by one unmapped guard page each, so
    they cannot merge; each gets its anon_vma before the threads start,
    as the single VMA does."""
    n = threads or cpus
    nv = n if vma_per_thread else max(1, min(int(vmas), n))
    m, eng, ctx = _setup(protocol, cpus, 2 * faults + 8192, profile, seed, config)
    p = m.spawn("pft")
    shares = _split(faults, n)
    group = [i * nv // n for i in range(n)]               # thread -> VMA
    base = p.mmap(0, (faults + nv) * PAGE, RW, ANON)
    starts: list[int] = []
    guards: list[int] = []
    addr = base
    for i, share in enumerate(shares):
        starts.append(addr)
        addr += share * PAGE
        if i == n - 1 or group[i + 1] != group[i]:
            guards.append(addr)                           # end of VMA group[i]
            addr += PAGE
    for g in guards:
        p.write(g, b"\0")     # anon_vma_prepare, as Linux's first fault
    for g in guards[:-1]:
        p.munmap(g, PAGE)      # split: one VMA per group, sharing the anon_vma
    _users(p.mm, n)
    mm = p.mm
    for i, share in enumerate(shares):
        eng.spawn(f"pft/{i}", mm, _pft_thread(ctx, mm, starts[i], share, think_ns))
    return Built(eng, ctx, n, n)


async def _pft_thread(ctx: Ctx, mm: Any, start: int, pages: int, think_ns: float) -> None:
    for i in range(pages):
        await ctx.touch(mm, start + i * PAGE)
        await ctx.user(think_ns)


# ------------------------------------------------------- will-it-scale
def page_fault1(protocol: str, cpus: int, *, faults: int = 100_000, chunk_pages: int = 512,
                profile: CostProfile | None = None, seed: int = 1,
                config: Config | None = None, kind: str = "anon") -> Built:
    """will-it-scale page_fault1 (anon) / 2 (private file) / 3 (shared
    file), threads mode: each thread maps a chunk, writes every page,
    unmaps it, and repeats until it has taken its share of ``faults``."""
    n = cpus
    file_pages = chunk_pages * n if kind != "anon" else 0
    m, eng, ctx = _setup(protocol, cpus, 2 * chunk_pages * n + file_pages + 8192, profile, seed, config)
    p = m.spawn(kind)
    mm = p.mm
    files: list[Any] = []
    if kind != "anon":
        for i in range(n):
            path = f"/wis/{i}"
            m.create_file(path, bytes(chunk_pages * PAGE))
            fd = p.open(path, sf.O_RDWR if hasattr(sf, "O_RDWR") else 2)
            files.append(p.files[fd])
    _users(mm, n)
    for i, share in enumerate(_split(faults, n)):
        f = files[i] if files else None
        eng.spawn(f"{kind}/{i}", mm, _wis_thread(ctx, mm, share, chunk_pages, kind, f))
    return Built(eng, ctx, n, n)


async def _wis_thread(ctx: Ctx, mm: Any, faults: int, chunk: int, kind: str, f: Any) -> None:
    flags = ANON if kind == "anon" else (MAP_PRIVATE if kind == "private" else MAP_SHARED)
    done = 0
    while done < faults:
        pages = min(chunk, faults - done)
        addr = await ctx.mmap(mm, chunk * PAGE, RW, flags, f, 0)
        for i in range(pages):
            await ctx.touch(mm, addr + i * PAGE)
        await ctx.munmap(mm, addr, chunk * PAGE)
        done += pages


def page_fault2(protocol: str, cpus: int, **kw: Any) -> Built:
    return page_fault1(protocol, cpus, kind="private", **kw)


def page_fault3(protocol: str, cpus: int, **kw: Any) -> Built:
    return page_fault1(protocol, cpus, kind="shared", **kw)


def mmap1(protocol: str, cpus: int, *, faults: int = 20_000, pages: int = 32,
          profile: CostProfile | None = None, seed: int = 1,
          config: Config | None = None) -> Built:
    """will-it-scale mmap1: mmap + munmap of ``pages`` pages, no touch;
    ``faults`` counts syscall pairs here."""
    n = cpus
    m, eng, ctx = _setup(protocol, cpus, 8192, profile, seed, config)
    p = m.spawn("mmap1")
    _users(p.mm, n)
    for i, share in enumerate(_split(max(1, faults // 10), n)):
        eng.spawn(f"mmap1/{i}", p.mm, _mmap1_thread(ctx, p.mm, share, pages))
    return Built(eng, ctx, n, 0)


async def _mmap1_thread(ctx: Ctx, mm: Any, iters: int, pages: int) -> None:
    for _ in range(iters):
        addr = await ctx.mmap(mm, pages * PAGE)
        await ctx.munmap(mm, addr, pages * PAGE)


# --------------------------------------------------------------- ebizzy
def ebizzy(protocol: str, cpus: int, *, faults: int = 50_000, max_pages: int = 64,
           work_ns: float = 2000.0, profile: CostProfile | None = None, seed: int = 1,
           config: Config | None = None) -> Built:
    """ebizzy -mTRp: each thread allocates records with mmap (random size up
    to ``max_pages``), touches every page, does some work, munmaps."""
    n = cpus
    m, eng, ctx = _setup(protocol, cpus, 2 * max_pages * n + 8192, profile, seed, config)
    p = m.spawn("ebizzy")
    _users(p.mm, n)
    for i, share in enumerate(_split(faults, n)):
        rng = random.Random(seed * 1000 + i)
        eng.spawn(f"ebizzy/{i}", p.mm, _ebizzy_thread(ctx, p.mm, share, max_pages, work_ns, rng))
    return Built(eng, ctx, n, n)


async def _ebizzy_thread(ctx: Ctx, mm: Any, faults: int, max_pages: int, work_ns: float,
                         rng: random.Random) -> None:
    done = 0
    while done < faults:
        pages = min(rng.randint(1, max_pages), faults - done)
        addr = await ctx.mmap(mm, pages * PAGE)
        for i in range(pages):
            await ctx.touch(mm, addr + i * PAGE)
        await ctx.user(work_ns * pages)
        await ctx.munmap(mm, addr, pages * PAGE)
        done += pages


# ------------------------------------------------------------- spf_test
def spf_test(protocol: str, cpus: int, *, faults: int = 2000, vmas: int = 2, pages: int = 10,
             guard: bool = False, profile: CostProfile | None = None, seed: int = 1,
             config: Config | None = None) -> Built:
    """Suren's spf_test: ``faults // (vmas*pages)`` threads (100 by
    default), each mmaps ``vmas`` anonymous VMAs of ``pages`` pages and
    write-faults every page, all at once.  The figure is the elapsed time.
    Adjacent VMAs merge, as in Linux; ``guard=True`` maps each with a
    PROT_NONE guard page below it (as thread stacks have), so none merge."""
    n = max(1, faults // (vmas * pages))
    m, eng, ctx = _setup(protocol, cpus, n * vmas * pages * 2 + 8192, profile, seed, config)
    p = m.spawn("spf_test")
    _users(p.mm, n)
    for i in range(n):
        eng.spawn(f"spf/{i}", p.mm, _spf_thread(ctx, p.mm, vmas, pages, guard))
    return Built(eng, ctx, n, n)


async def _spf_thread(ctx: Ctx, mm: Any, vmas: int, pages: int, guard: bool = False) -> None:
    addrs = []
    for _ in range(vmas):
        a = await ctx.mmap(mm, (pages + guard) * PAGE)
        if guard:
            await ctx.mprotect(mm, a, PAGE, 0)
            a += PAGE
        addrs.append(a)
    for a in addrs:
        for i in range(pages):
            await ctx.touch(mm, a + i * PAGE)


# ----------------------------------------------------------- app_launch
def app_launch(protocol: str, cpus: int, *, faults: int = 6000, threads: int = 0,
               loaders: int = 2, maps: int = 40, map_pages: int = 16, free_frac: float = 0.06,
               think_ns: float = 2000.0, io_ns: float = 200_000.0, loader_io_ns: float = 20_000.0,
               other: str = "anon", profile: CostProfile | None = None, seed: int = 1,
               config: Config | None = None) -> Built:
    """An Android-style app launch: ``threads`` (default 4 per CPU) fault
    their heaps (anonymous VMAs that already have an anon_vma) while
    ``loaders`` threads map libraries (mmap, then mprotect part of it
    read-only, ``maps`` times each), with free memory at the min watermark:
    ``free_frac`` of the frames are free, the watermark is set there, and
    the rest of memory is other apps' — clean page cache (reclaimable:
    enough for everything the launch allocates) and memory the app cannot
    get back.  So allocations wake kswapd and enter direct reclaim (the
    model's, mm/vmscan.py: its cost is the pages it scans), and a fault
    holding mmap_lock while it reclaims stalls every mmap writer — and,
    behind a waiting writer, every other fault.  The figure is the elapsed
    time."""
    n = threads or 4 * cpus
    need = faults + loaders * maps * map_pages + 4096
    frames = int(need / free_frac) + 1
    free = max(16, int(frames * free_frac))
    cache = need + free                            # other apps' clean page cache
    if other not in ("anon", "file"):
        raise ValueError(f"app_launch: other must be 'anon' or 'file', not {other!r}")
    base = config if config is not None else Config()
    knobs = {"watermark_min": free, "swap_pages": cache + 16 if other == "anon" else 0}
    cfg = base.with_(**{k: v for k, v in knobs.items() if k not in base.knobs})
    m, eng, ctx = _setup(protocol, cpus, frames, profile, seed, cfg)
    mem = m.kernel.mem
    if other == "file":
        _read_from_disk(m, "/other-apps", cache)
    else:
        _background_heap(m, cache)
    p = m.spawn("app")
    mm = p.mm
    _users(mm, n + loaders)
    shares = _split(faults, n)
    for i, share in enumerate(shares):
        heap = p.mmap(0, (share + 1) * PAGE, RW, ANON)
        p.write(heap + share * PAGE, b"\0")          # anon_vma exists
        eng.spawn(f"app/{i}", mm, _app_thread(ctx, mm, heap, share, think_ns, io_ns))
    for j in range(loaders):
        eng.spawn(f"loader/{j}", mm, _loader(ctx, mm, maps, map_pages, loader_io_ns),
                  at=float(j))
    pinned = mem.nr_free() - free                  # memory nobody gives back:
    if pinned > 0:                                 # free memory starts at min
        del mem.free_pfns[len(mem.free_pfns) - pinned:]
    return Built(eng, ctx, n + loaders, n)


def _read_from_disk(m: sf.Machine, path: str, pages: int) -> None:
    """Other processes' page cache: a file of ``pages`` pages already on
    disk (its backing store, nothing cached), mapped and read through once
    by another process (read faults fill the cache), then unmapped — clean,
    unmapped pages on the inactive file LRU, which reclaim drops at once."""
    inode = m.kernel.fs.create(path)
    inode.size = pages * PAGE               # on disk, not cached (zeroes)
    p = m.spawn("reader")
    fd = p.open(path)
    addr = p.mmap(0, pages * PAGE, PROT_READ, MAP_PRIVATE, fd)
    for i in range(pages):
        p.read(addr + i * PAGE, 1)
    p.munmap(addr, pages * PAGE)
    p.close(fd)
    p.exit()


def _background_heap(m: sf.Machine, pages: int) -> None:
    """Other apps' anonymous memory: a process that wrote ``pages`` pages
    of its heap and went to the background (swap-backed, on the LRU)."""
    p = m.spawn("background")
    addr = p.mmap(0, pages * PAGE, RW, ANON)
    for i in range(pages):
        p.write(addr + i * PAGE, b"\1")


async def _app_thread(ctx: Ctx, mm: Any, start: int, pages: int, think_ns: float,
                      io_ns: float) -> None:
    """Fault a page, compute a little, then block (I/O, binder) a while."""
    for i in range(pages):
        await ctx.touch(mm, start + i * PAGE)
        await ctx.user(think_ns)
        await ctx.sleep(ctx.rng.uniform(0.0, 2.0 * io_ns))


async def _loader(ctx: Ctx, mm: Any, maps: int, pages: int, io_ns: float) -> None:
    """The dynamic loader: map a library, relocate, mprotect RELRO, read the next."""
    for _ in range(maps):
        addr = await ctx.mmap(mm, pages * PAGE)
        await ctx.touch(mm, addr)                       # relocations
        await ctx.mprotect(mm, addr, (pages // 2) * PAGE, PROT_READ)
        await ctx.sleep(io_ns)


# ------------------------------------------------------------- pressure
def pressure(protocol: str, cpus: int, *, faults: int = 8192, passes: int = 2, limit: float = 0.5,
             faulters: int = 1, writer_pages: int = 16, writer_gap_ns: float = 10_000.0,
             think_ns: float = 100.0, profile: CostProfile | None = None, seed: int = 1,
             config: Config | None = None) -> Built:
    """The seed's case: ``faulters`` threads write one byte per page of an
    anonymous region of ``faults // passes`` pages, ``passes`` times over,
    on a machine whose memory holds only ``limit`` of the region (with swap
    for the rest: kswapd and direct reclaim swap pages out, the next pass
    swaps them in), while one more thread maps and unmaps ``writer_pages``
    pages in a loop until the faulters are done, sleeping ``writer_gap_ns``
    between pairs (the host's writer loops flat out; the gap bounds the
    samples a long run keeps, not their latency).  ``writer_lat`` is the
    writer's mmap+munmap latency; ``fault_lat`` the faults'.  ``limit`` >= 1
    is the no-pressure baseline.  The host's counterpart is
    ``benchmarks/bench_pressure_host.py`` (a memory cgroup instead of a
    small machine: there, memcg limit reclaim instead of kswapd)."""
    region = max(1, faults // passes)
    resident = max(64, int(region * limit))
    # the watermarks a small zone gets: min ~1/64 of memory, low and high
    # a quarter of it apart above (page.py set_watermarks)
    wmin = max(16, resident // 64)
    frames = resident + 2 * wmin + region // 512 + writer_pages + 64
    base = config if config is not None else Config()
    knobs = {"watermark_min": wmin, "swap_pages": 2 * region + 16}
    cfg = base.with_(**{k: v for k, v in knobs.items() if k not in base.knobs})
    m, eng, ctx = _setup(protocol, cpus, frames, profile, seed, cfg)
    p = m.spawn("pressure")
    mm = p.mm
    _users(mm, faulters + 1)
    region_addr = p.mmap(0, region * PAGE, RW, ANON)
    done = [0]
    for i, share in enumerate(_split(region, faulters)):
        start = region_addr + sum(_split(region, faulters)[:i]) * PAGE
        eng.spawn(f"faulter/{i}", mm, _pressure_faulter(ctx, mm, start, share, passes, think_ns, done))
    eng.spawn("writer", mm, _pressure_writer(ctx, mm, writer_pages, writer_gap_ns, faulters, done))
    return Built(eng, ctx, faulters + 1, faulters)


async def _pressure_faulter(ctx: Ctx, mm: Any, start: int, pages: int, passes: int,
                            think_ns: float, done: list[int]) -> None:
    for _ in range(passes):
        for i in range(pages):
            # a non-zero byte, as the host's writer stores: a zero-filled
            # page would not be written to swap (the zeromap)
            await ctx.touch(mm, start + i * PAGE, data=b"\1")
            await ctx.user(think_ns)
    done[0] += 1


#: the writer's iterations at most (bounds a run's memory)
PRESSURE_WRITER_MAX = 200_000


async def _pressure_writer(ctx: Ctx, mm: Any, pages: int, gap_ns: float, faulters: int,
                           done: list[int]) -> None:
    """mmap + munmap of ``pages`` pages until the faulters are done; each
    pair's latency (both syscalls) is one ``writer_lat`` sample."""
    eng = ctx.engine
    for _ in range(PRESSURE_WRITER_MAX):
        if done[0] >= faulters:
            break
        t0 = eng.now
        await Work("syscall")
        addr, _ = await sys_mmap(mm, 0, pages * PAGE, RW, ANON, None, 0)
        if addr < 0:
            raise RuntimeError(f"pressure writer: mmap failed: {addr}")
        await Work("syscall")
        ret = await sys_munmap(mm, int(addr), pages * PAGE)
        if ret < 0:
            raise RuntimeError(f"pressure writer: munmap failed: {ret}")
        ctx.syscalls += 2
        ctx.writer_lat.append(eng.now - t0)
        await ctx.sleep(gap_ns)


#: name -> (builder, one-line description)
WORKLOADS: dict[str, tuple[Callable[..., Built], str]] = {
    "pft": (pft, "one region split among threads, write faults"),
    "page_fault1": (page_fault1, "will-it-scale: mmap, write every page, munmap (anon)"),
    "page_fault2": (page_fault2, "will-it-scale: the same, private file mapping (COW)"),
    "page_fault3": (page_fault3, "will-it-scale: the same, shared file mapping"),
    "mmap1": (mmap1, "will-it-scale: mmap + munmap, no touch"),
    "ebizzy": (ebizzy, "ebizzy -mTRp: mmap'ed records of random size"),
    "spf_test": (spf_test, "threads x 2 VMAs x 10 pages, mmap and fault at once"),
    "app_launch": (app_launch, "faulting threads + loader mmap/mprotect under memory pressure"),
    "pressure": (pressure, "a thread faulting through more than memory (swap) + an mmap writer"),
}


def build(name: str, protocol: str, cpus: int, **params: Any) -> Built:
    """Build workload ``name`` (see :data:`WORKLOADS`)."""
    try:
        fn = WORKLOADS[name][0]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}") from None
    return fn(protocol, cpus, **params)
