"""Property-based tests: random syscall / access sequences over a few
processes and threads, with ``check()`` (check_mm over every live mm and
the machine's page accounting) after EVERY step, against a reference model.

The reference is deliberately dumb: per address space, a dict from page
address to what that page is (protection, MADV_DONTFORK, and its backing),
and per memory object (the file, each MAP_SHARED|MAP_ANONYMOUS region) a
dict from page index to its first bytes.  Backings:

    ("anon", data)              private anonymous: its own bytes
    ("priv", obj, idx, data)    private file page: ``data`` once written
                                (COW), None while it still shows obj[idx]
    ("shared", obj, idx)        shared: always obj[idx]

From it the test predicts, independently of the model: the set of mapped
pages and their permissions (compared with maps() after every step), the
errno of mprotect/madvise/munmap, the outcome of every access (data,
SEGV_MAPERR, SEGV_ACCERR, SIGBUS beyond EOF) — including private memory
across fork (COW must never leak a write into the other process) and shared
memory across fork (it must).

The window straddles a 2 MiB boundary, so moves and zaps cross PTE tables.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import specfault as sf
from specfault import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_WILLNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    O_RDWR,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    SEGV_ACCERR,
    SEGV_MAPERR,
)

P = 4096
NPAGES = 24
BASE = 0x3F0000200000 - 12 * P          # the window straddles a PMD boundary
FILE_PAGES = 10                          # the file: 9 full pages and a partial one
FILE_SIZE = (FILE_PAGES - 1) * P + 100
PROTS = [PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC,
         PROT_READ | PROT_WRITE | PROT_EXEC, PROT_EXEC]


def _file_bytes(idx: int) -> bytes:
    return bytes([0x40 + idx] * 4)


@dataclass(eq=False)
class Obj:
    """A memory object: the file, or one shared anonymous region."""

    name: str
    npages: int
    data: dict[int, bytes] = field(default_factory=dict)

    def get(self, idx: int) -> bytes:
        return self.data.get(idx, bytes(4))


@dataclass
class PageRef:
    prot: int
    backing: tuple[Any, ...]
    dontfork: bool = False


class Space:
    """The reference address space of one mm."""

    def __init__(self) -> None:
        self.pages: dict[int, PageRef] = {}

    def copy_for_fork(self) -> Space:
        child = Space()
        child.pages = {a: PageRef(r.prot, r.backing) for a, r in self.pages.items()
                       if not r.dontfork}
        return child

    def unmap(self, start: int, end: int) -> None:
        for a in range(start, end, P):
            self.pages.pop(a, None)

    def mapped(self, start: int, end: int) -> list[int]:
        return [a for a in range(start, end, P) if a in self.pages]


def expected_read(ref: PageRef) -> bytes:
    kind = ref.backing[0]
    if kind == "anon":
        return ref.backing[1]                                   # type: ignore[no-any-return]
    if kind == "priv" and ref.backing[3] is not None:
        return ref.backing[3]                                   # type: ignore[no-any-return]
    return ref.backing[1].get(ref.backing[2])                   # type: ignore[no-any-return]


def beyond_eof(ref: PageRef) -> bool:
    return ref.backing[0] in ("priv", "shared") and ref.backing[2] >= ref.backing[1].npages


def perms(prot: int, shared: bool) -> str:
    return ("r" if prot & PROT_READ else "-") + ("w" if prot & PROT_WRITE else "-") \
        + ("x" if prot & PROT_EXEC else "-") + ("s" if shared else "p")


pages = st.integers(0, NPAGES - 1)
lengths = st.integers(1, 8)


class MmMachine(RuleBasedStateMachine):
    """Drive a Machine with random syscalls and accesses; check after each."""

    def __init__(self) -> None:
        super().__init__()
        self.m = sf.Machine()
        self.file = Obj("file", FILE_PAGES)
        self.m.create_file("/f", b"".join(_file_bytes(i) * (P // 4) for i in range(FILE_PAGES))
                           [:FILE_SIZE])
        self.file.data = {i: _file_bytes(i) for i in range(FILE_PAGES)}
        self.procs: list[tuple[Any, Space, int]] = []     # (process, space, fd)
        self.threads: list[tuple[Any, int]] = []          # (thread, index of its process)
        self.counter = 0
        self.heap: dict[int, int] = {}                    # proc index -> brk

    @initialize()
    def first(self) -> None:
        p = self.m.spawn()
        fd = p.open("/f", O_RDWR)
        self.procs.append((p, Space(), fd))
        self.heap[0] = p.brk(0)

    # ------------------------------------------------------------ helpers
    def live(self) -> list[int]:
        return [i for i, (p, _, _) in enumerate(self.procs) if not p.mm.dead]

    def pick(self, data: st.DataObject) -> tuple[Any, Space, int, int]:
        i = data.draw(st.sampled_from(self.live()), label="proc")
        p, space, fd = self.procs[i]
        return p, space, fd, i

    def ctx(self, data: st.DataObject, i: int) -> Any:
        """The process, or one of its threads, to make a call from."""
        ts = [t for t, j in self.threads if j == i]
        return data.draw(st.sampled_from([self.procs[i][0], *ts]), label="ctx")

    def tag(self) -> bytes:
        self.counter += 1
        return self.counter.to_bytes(4, "little")

    # -------------------------------------------------------------- rules
    @rule(data=st.data(), page=pages, n=lengths, prot=st.sampled_from(PROTS),
          kind=st.sampled_from(["anon", "anon", "shared-anon", "file", "file-shared"]),
          off=st.integers(0, FILE_PAGES + 1))
    def mmap(self, data: st.DataObject, page: int, n: int, prot: int, kind: str,
             off: int) -> None:
        p, space, fd, i = self.pick(data)
        addr = BASE + page * P
        if kind == "anon":
            got = p.mmap(addr, n * P, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
            backs = [("anon", bytes(4)) for _ in range(n)]
        elif kind == "shared-anon":
            got = p.mmap(addr, n * P, prot, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
            obj = Obj(f"shm{self.counter}", n)
            self.counter += 1
            backs = [("shared", obj, k) for k in range(n)]
        else:
            shared = kind == "file-shared"
            got = p.mmap(addr, n * P, prot, (MAP_SHARED if shared else MAP_PRIVATE) | MAP_FIXED,
                         fd, off * P)
            backs = [("shared", self.file, off + k) if shared else
                     ("priv", self.file, off + k, None) for k in range(n)]
        assert got == addr
        space.unmap(addr, addr + n * P)
        for k, b in enumerate(backs):
            space.pages[addr + k * P] = PageRef(prot, b)

    @rule(data=st.data(), n=lengths)
    def mmap_anywhere(self, data: st.DataObject, n: int) -> None:
        p, space, _, _ = self.pick(data)
        got = p.mmap(0, n * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        assert got % P == 0
        assert not space.mapped(got, got + n * P), "mmap(NULL) returned a used range"
        for k in range(n):
            space.pages[got + k * P] = PageRef(PROT_READ | PROT_WRITE, ("anon", bytes(4)))

    @rule(data=st.data(), page=pages, n=lengths)
    def munmap(self, data: st.DataObject, page: int, n: int) -> None:
        p, space, _, i = self.pick(data)
        addr = BASE + page * P
        self.ctx(data, i).munmap(addr, n * P)
        space.unmap(addr, addr + n * P)

    @rule(data=st.data(), page=pages, n=lengths, prot=st.sampled_from(PROTS))
    def mprotect(self, data: st.DataObject, page: int, n: int, prot: int) -> None:
        p, space, _, i = self.pick(data)
        addr = BASE + page * P
        want = 0
        for a in range(addr, addr + n * P, P):            # applied up to the first hole
            if a not in space.pages:
                want = errno.ENOMEM
                break
            space.pages[a].prot = prot
        try:
            self.ctx(data, i).mprotect(addr, n * P, prot)
            got = 0
        except OSError as e:
            got = e.errno
        assert got == want, f"mprotect errno {got}, reference says {want}"

    @rule(data=st.data(), page=pages, n=lengths,
          advice=st.sampled_from([MADV_DONTNEED, MADV_DONTNEED, MADV_DONTFORK, MADV_DOFORK,
                                  MADV_WILLNEED]))
    def madvise(self, data: st.DataObject, page: int, n: int, advice: int) -> None:
        p, space, _, i = self.pick(data)
        addr = BASE + page * P
        mapped = space.mapped(addr, addr + n * P)
        want = errno.ENOMEM if len(mapped) < n else 0
        for a in mapped:                                  # applied to every mapped part
            ref = space.pages[a]
            if advice == MADV_DONTNEED:
                if ref.backing[0] == "anon":
                    ref.backing = ("anon", bytes(4))
                elif ref.backing[0] == "priv":
                    ref.backing = ref.backing[:3] + (None,)
            elif advice in (MADV_DONTFORK, MADV_DOFORK):
                ref.dontfork = advice == MADV_DONTFORK
        try:
            self.ctx(data, i).madvise(addr, n * P, advice)
            got = 0
        except OSError as e:
            got = e.errno
        assert got == want, f"madvise errno {got}, reference says {want}"

    @rule(data=st.data(), page=pages, old_n=lengths, new_n=lengths, dest=pages,
          how=st.sampled_from(["inplace", "maymove", "fixed", "dontunmap"]))
    def mremap(self, data: st.DataObject, page: int, old_n: int, new_n: int, dest: int,
               how: str) -> None:
        p, space, _, i = self.pick(data)
        old = BASE + page * P
        flags, new_addr = 0, 0
        if how == "maymove":
            flags = MREMAP_MAYMOVE
        elif how == "fixed":
            flags, new_addr = MREMAP_MAYMOVE | MREMAP_FIXED, BASE + dest * P
        elif how == "dontunmap":
            flags, new_n = MREMAP_MAYMOVE | MREMAP_DONTUNMAP, old_n
        before = {a: (r.prot, r.backing, r.dontfork) for a, r in space.pages.items()}
        try:
            got = self.ctx(data, i).mremap(old, old_n * P, new_n * P, flags, new_addr)
        except OSError:
            # (a failing mremap changes nothing on Linux 6.18: all checks come
            # before the destination or the old tail is unmapped)
            # failed: nothing may have changed (maps and data are compared below)
            assert {a: (r.prot, r.backing, r.dontfork) for a, r in space.pages.items()} == before
            return
        keep = min(old_n, new_n)
        moving = [space.pages.get(old + k * P) for k in range(keep)]
        multi = flags & MREMAP_FIXED and old_n == new_n
        # a shrink or no-op in place needs only a VMA at old; only a pure
        # MREMAP_FIXED move may span holes (Linux 6.17+)
        if not multi and (got != old or new_n > old_n):
            assert all(r is not None for r in moving), "mremap succeeded over a hole"
        assert moving[0] is not None, "mremap succeeded at an unmapped address"
        if flags & MREMAP_FIXED:
            assert got == new_addr
            if multi:
                # Linux 6.17+ remap_move: each VMA moved unmaps only its own
                # destination; a hole in the source leaves its destination
                # as it was (as the host does: tests/mm/test_fork_mremap_proc)
                for k, r in enumerate(moving):
                    if r is not None:
                        space.unmap(new_addr + k * P, new_addr + (k + 1) * P)
            else:
                space.unmap(new_addr, new_addr + new_n * P)
        if got == old:                                              # in place
            space.unmap(old + new_n * P, old + old_n * P)
        else:
            space.unmap(old, old + old_n * P)
        if got == old:
            moving = moving if new_n > old_n else []
        if flags & MREMAP_DONTUNMAP:                                 # old range stays, empty
            for k, r in enumerate(moving):
                if r is None:
                    continue                                       # a gap stays a gap
                b = r.backing
                fresh = ("anon", bytes(4)) if b[0] == "anon" else \
                    b[:3] + (None,) if b[0] == "priv" else b
                space.pages[old + k * P] = PageRef(r.prot, fresh, r.dontfork)
        for k, r in enumerate(moving):
            if r is not None:
                space.pages[got + k * P] = r
        last = moving[-1] if moving else None
        for k in range(old_n, new_n):                               # grown: continues
            assert last is not None
            b = last.backing
            extra = k - old_n + 1
            grown = ("anon", bytes(4)) if b[0] == "anon" else \
                ("priv", b[1], b[2] + extra, None) if b[0] == "priv" else ("shared", b[1], b[2] + extra)
            space.pages[got + k * P] = PageRef(last.prot, grown, last.dontfork)

    @rule(data=st.data(), page=pages)
    def write(self, data: st.DataObject, page: int) -> None:
        p, space, _, i = self.pick(data)
        addr = BASE + page * P
        tag = self.tag()
        ref = space.pages.get(addr)
        try:
            self.ctx(data, i).write(addr, tag)
        except sf.SegmentationFault as e:
            assert e.addr == addr
            assert ref is None or not ref.prot & PROT_WRITE, f"write to {ref} faulted"
            assert e.si_code == (SEGV_MAPERR if ref is None else SEGV_ACCERR)
            return
        except sf.BusError:
            assert ref is not None and beyond_eof(ref), f"SIGBUS on {ref}"
            return
        assert ref is not None and ref.prot & PROT_WRITE, f"write allowed on {ref}"
        assert not beyond_eof(ref), "no SIGBUS beyond EOF"
        kind = ref.backing[0]
        if kind == "anon":
            ref.backing = ("anon", tag)
        elif kind == "priv":
            ref.backing = ref.backing[:3] + (tag,)
        else:
            ref.backing[1].data[ref.backing[2]] = tag

    @rule(data=st.data(), page=pages)
    def read(self, data: st.DataObject, page: int) -> None:
        p, space, _, i = self.pick(data)
        addr = BASE + page * P
        ref = space.pages.get(addr)
        try:
            got = self.ctx(data, i).read(addr, 4)
        except sf.SegmentationFault as e:
            assert ref is None or ref.prot == PROT_NONE, f"read of {ref} faulted"
            assert e.si_code == (SEGV_MAPERR if ref is None else SEGV_ACCERR)
            return
        except sf.BusError:
            assert ref is not None and beyond_eof(ref), f"SIGBUS on {ref}"
            return
        assert ref is not None and ref.prot != PROT_NONE and not beyond_eof(ref)
        assert got == expected_read(ref), f"read {got!r} at {addr:#x}, reference {ref}"

    @rule(data=st.data(), idx=st.integers(0, FILE_PAGES - 1))
    def pwrite(self, data: st.DataObject, idx: int) -> None:
        p, _, fd, _ = self.pick(data)
        tag = self.tag()
        p.pwrite(fd, tag, idx * P)
        self.file.data[idx] = tag

    @rule(data=st.data(), delta=st.integers(-3, 3))
    def brk(self, data: st.DataObject, delta: int) -> None:
        p, space, _, i = self.pick(data)
        old = self.heap[i]
        start = p.mm.start_brk
        want = max(start, old + delta * P)
        got = p.brk(want)
        assert got == want
        lo, hi = sorted((old, got))
        if got < old:
            space.unmap(got, old)
        else:
            for a in range(lo, hi, P):
                space.pages[a] = PageRef(PROT_READ | PROT_WRITE, ("anon", bytes(4)))
        self.heap[i] = got

    @precondition(lambda self: len(self.live()) < 4)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        p, space, fd, i = self.pick(data)
        child = p.fork()
        self.procs.append((child, space.copy_for_fork(), fd))
        self.heap[len(self.procs) - 1] = self.heap[i]

    @precondition(lambda self: len(self.threads) < 3)
    @rule(data=st.data())
    def thread(self, data: st.DataObject) -> None:
        p, _, _, i = self.pick(data)
        self.threads.append((p.thread(), i))

    @precondition(lambda self: len(self.live()) > 1)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        p, space, _, _ = self.pick(data)
        p.exit()
        space.pages.clear()

    # --------------------------------------------------------- invariants
    @invariant()
    def structure(self) -> None:
        self.m.check()

    @invariant()
    def layout_matches_reference(self) -> None:
        for i in self.live():
            p, space, _ = self.procs[i]
            seen: dict[int, str] = {}
            for line in p.maps().splitlines():
                rng, perm = line.split()[:2]
                lo, hi = (int(x, 16) for x in rng.split("-"))
                for a in range(lo, hi, P):
                    seen[a] = perm
            want = {a: perms(r.prot, r.backing[0] == "shared") for a, r in space.pages.items()}
            assert seen == want, f"maps of process {i} differ from the reference:\n" \
                + "\n".join(f"  {a:#x}: model {seen.get(a)} reference {want.get(a)}"
                            for a in sorted(set(seen) | set(want)) if seen.get(a) != want.get(a))


MmMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMmProperties = MmMachine.TestCase


class OomMachine(RuleBasedStateMachine):
    """A machine with very few frames: faults run out of memory often.  An
    access that gets OutOfMemory must leave every structure consistent and
    the data of every page unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.m = sf.Machine(nr_frames=24)
        self.procs: list[tuple[Any, dict[int, bytes]]] = []
        self.counter = 0

    @initialize()
    def first(self) -> None:
        p = self.m.spawn()
        p.mmap(BASE, NPAGES * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        self.procs.append((p, {}))

    def live(self) -> list[int]:
        return [i for i, (p, _) in enumerate(self.procs) if not p.mm.dead]

    @rule(data=st.data(), page=pages)
    def write(self, data: st.DataObject, page: int) -> None:
        p, mem = self.procs[data.draw(st.sampled_from(self.live()))]
        self.counter += 1
        tag = self.counter.to_bytes(4, "little")
        try:
            p.write(BASE + page * P, tag)
        except sf.OutOfMemory:
            return
        mem[page] = tag

    @rule(data=st.data(), page=pages)
    def read(self, data: st.DataObject, page: int) -> None:
        p, mem = self.procs[data.draw(st.sampled_from(self.live()))]
        try:
            got = p.read(BASE + page * P, 4)
        except sf.OutOfMemory:
            return
        assert got == mem.get(page, bytes(4))

    @rule(data=st.data(), page=pages, n=lengths)
    def dontneed(self, data: st.DataObject, page: int, n: int) -> None:
        p, mem = self.procs[data.draw(st.sampled_from(self.live()))]
        n = min(n, NPAGES - page)
        p.madvise(BASE + page * P, n * P, MADV_DONTNEED)
        for k in range(page, min(NPAGES, page + n)):
            mem.pop(k, None)

    @precondition(lambda self: len(self.live()) < 3)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        p, mem = self.procs[data.draw(st.sampled_from(self.live()))]
        try:
            child = p.fork()
        except sf.OutOfMemory:
            return
        self.procs.append((child, dict(mem)))

    @precondition(lambda self: len(self.live()) > 1)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        p, _ = self.procs[data.draw(st.sampled_from(self.live()))]
        p.exit()

    @invariant()
    def structure(self) -> None:
        self.m.check()


OomMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOomProperties = OomMachine.TestCase
