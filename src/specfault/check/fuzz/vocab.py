"""The fuzz programs' vocabulary: one table of ops, one of argument kinds.

Adding an op is one :class:`OpKind` entry in :data:`VOCAB`: its argument
kinds (from :data:`PARAMS`, which say how to draw, check and shrink a
value), how it runs (``run(ctx, world, proc, tag, args)`` returns the
model coroutine; its value is the step's result, a negative int an errno),
where it may appear (a thread, the setup, or both) and how often the
generator draws it.  Every op runs the model's own syscall or access code,
so the explorer interleaves it at every op the model awaits.

The kernel's own actors come with the explorer, not the table: the RCU
callback processor is an actor of every program (``rcu`` in traces), and
TLB shootdowns are taken by the CPUs of the threads inside every flush
(a CPU with interrupts off delays its acknowledgement).  Truncation and
hole punching are ops of a thread (they change other mms' page tables
without their mmap_lock); reclaim comes through ``madvise(PAGEOUT)`` and
``COLD`` on a machine with a small swap device (``compile.config_for``),
so pages go to swap and come back through ``do_swap_page``.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import specfault.constants as C
from specfault.check.fuzz.base import PAGE, Arg, Op, ProgramError, page_addr
from specfault.errors import OutOfMemory, SignalError
from specfault.mm.access import user_access
from specfault.mm.fault import ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE
from specfault.mm.fork import dup_mmap, exit_mmap
from specfault.mm.gup import gup_dma, mm_populate, pin_user_pages, unpin_user_pages
from specfault.mm.madvise import SUPPORTED as MADV_SUPPORTED
from specfault.mm.madvise import sys_madvise
from specfault.mm.mmap import sys_mmap, sys_munmap
from specfault.mm.mprotect import sys_mprotect
from specfault.mm.mremap import sys_mremap
from specfault.mm.truncate import do_truncate, shmem_punch_hole
from specfault.runtime import AtomicAdd

if TYPE_CHECKING:   # (program.py imports this module)
    from specfault.check.fuzz.program import Program

#: the fd of /f in the first process (and the children it forks)
FILE_FD = 3
FILE_PATH = "/f"


@dataclass(frozen=True)
class Ctx:
    """What an op needs of its program: the window and the file's size."""

    window: int
    file_pages: int


# ------------------------------------------------------------ argument kinds
@dataclass(frozen=True)
class Param:
    """An argument kind: ``draw(rng, ctx)``, the valid values
    (``valid(value, ctx)``), and simpler values to try when shrinking
    (``simpler(value, ctx)``, simplest first)."""

    name: str
    draw: Callable[[random.Random, Ctx], Arg]
    valid: Callable[[Arg, Ctx], bool]
    simpler: Callable[[Arg, Ctx], list[Arg]]
    what: str


def _words(name: str, words: tuple[str, ...], weights: tuple[int, ...] | None = None,
           only: Callable[[str, Ctx], bool] | None = None) -> Param:
    def draw(rng: random.Random, ctx: Ctx) -> Arg:
        pool = [(w, wt) for w, wt in zip(words, weights or (1,) * len(words), strict=False)
                if only is None or only(w, ctx)]
        return rng.choices([w for w, _ in pool], [wt for _, wt in pool])[0]

    def valid(v: Arg, ctx: Ctx) -> bool:
        return isinstance(v, str) and v in words

    def simpler(v: Arg, ctx: Ctx) -> list[Arg]:
        return [] if v == words[0] else [words[0]]

    return Param(name, draw, valid, simpler, "one of " + ", ".join(words))


def _int_param(name: str, lo: Callable[[Ctx], int], hi: Callable[[Ctx], int],
               draw: Callable[[random.Random, Ctx], int], what: str) -> Param:
    def valid(v: Arg, ctx: Ctx) -> bool:
        return isinstance(v, int) and lo(ctx) <= v <= hi(ctx)

    def simpler(v: Arg, ctx: Ctx) -> list[Arg]:
        assert isinstance(v, int)
        out: list[Arg] = []
        for c in (lo(ctx), v - 1):
            if lo(ctx) <= c < v and c not in out:
                out.append(c)
        return out

    return Param(name, lambda rng, ctx: draw(rng, ctx), valid, simpler, what)


def _draw_page(rng: random.Random, ctx: Ctx) -> int:
    # where an access lands: anywhere in the window, sometimes the far
    # window (where mremap moves to)
    if rng.random() < 0.85:
        return rng.randrange(ctx.window)
    return ctx.window + rng.randrange(ctx.window)


def _draw_start(rng: random.Random, ctx: Ctx) -> int:
    # where a syscall's range starts: often where a mapping or a page table
    # starts (page 0, the PMD boundary in the middle), so syscalls cover
    # whole mappings and tables; else as an access
    x = rng.random()
    if x < 0.35:
        return 0
    if x < 0.55:
        return ctx.window // 2
    return _draw_page(rng, ctx)


def _draw_count(rng: random.Random, ctx: Ctx) -> int:
    # one page, a PTE table's half of the window, or all of it
    return max(1, min(ctx.window, rng.choice((1, 1, 2, ctx.window // 2, ctx.window, ctx.window))))


PROTS = {"rw": C.PROT_READ | C.PROT_WRITE, "r": C.PROT_READ, "none": C.PROT_NONE,
         "rx": C.PROT_READ | C.PROT_EXEC, "rwx": C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC}
#: the advices madvise accepts in the model (every one of Linux's but guard
#: regions and memory failure), the ones that touch pages drawn more often
ADVICES = tuple(sorted((n[5:] for n in dir(C) if n.startswith("MADV_")
                        and getattr(C, n) in MADV_SUPPORTED),
                       key=lambda n: (n != "DONTNEED", n)))
_ADVICE_WEIGHT = {"DONTNEED": 8, "FREE": 4, "REMOVE": 3, "PAGEOUT": 3, "COLD": 2,
                  "POPULATE_READ": 3, "POPULATE_WRITE": 4, "WIPEONFORK": 2, "DONTFORK": 2,
                  "WILLNEED": 2, "DONTNEED_LOCKED": 1}

PARAMS: dict[str, Param] = {p.name: p for p in [
    _int_param("page", lambda c: 0, lambda c: 2 * c.window - 1, _draw_page,
               "a page slot 0..2*window-1"),
    _int_param("start", lambda c: 0, lambda c: 2 * c.window - 1, _draw_start,
               "a page slot 0..2*window-1"),
    _int_param("count", lambda c: 1, lambda c: c.window, _draw_count, "a page count 1..window"),
    _int_param("pgoff", lambda c: 0, lambda c: max(c.file_pages - 1, 0),
               lambda rng, c: rng.randrange(max(c.file_pages, 1)), "a file page 0..file-1"),
    _words("prot", tuple(PROTS), (6, 3, 1, 1, 1)),
    _words("kind", ("anon", "file"), (2, 1), only=lambda w, c: w == "anon" or c.file_pages > 0),
    _words("share", ("private", "shared"), (3, 1)),
    _words("place", ("fixed", "hint", "noreplace", "populate"), (5, 1, 1, 1)),
    _words("mode", ("maymove", "inplace", "fixed", "dontunmap"), (2, 2, 3, 1)),
    _words("advice", ADVICES, tuple(_ADVICE_WEIGHT.get(a, 1) for a in ADVICES)),
]}


# --------------------------------------------------------------------- ops
Run = Callable[[Ctx, Any, Any, bytes, tuple[Arg, ...]], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class OpKind:
    name: str
    params: tuple[str, ...]
    run: Run
    #: "thread", "setup" or "both"
    where: str = "both"
    #: relative frequency in generated threads (0: never drawn for threads)
    weight: int = 1
    #: must be its thread's last op (exit)
    last: bool = False
    #: a syscall (a writer of the mm, or a reader of mmap_lock that changes
    #: PTEs): what coverage records as "in flight" beside a fault
    syscall: bool = True
    #: "user" (runs in a process's mm) or "kernel" (a kernel thread's work)
    who: str = "user"
    doc: str = ""


async def _access(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...],
                  access: int) -> Any:
    addr = page_addr(ctx.window, int(args[0]))
    if access == ACCESS_WRITE:
        return await user_access(proc.mm, addr, ACCESS_WRITE, 0, tag)
    return await user_access(proc.mm, addr, access, 8 if access == ACCESS_READ else 1)


def _span(ctx: Ctx, args: tuple[Arg, ...]) -> tuple[int, int]:
    return page_addr(ctx.window, int(args[0])), int(args[1]) * PAGE


async def _mmap(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    _, _, prot, kind, share, place, pgoff = args
    addr, length = _span(ctx, args)
    flags = C.MAP_SHARED if share == "shared" else C.MAP_PRIVATE
    file = None
    if kind == "anon":
        flags |= C.MAP_ANONYMOUS
    else:
        file = proc.files.get(FILE_FD)
        if file is None:
            return -errno.EBADF
    flags |= {"fixed": C.MAP_FIXED, "hint": 0, "noreplace": C.MAP_FIXED_NOREPLACE,
              "populate": C.MAP_FIXED | C.MAP_POPULATE}[str(place)]
    ret, populate = await sys_mmap(proc.mm, addr, length, PROTS[str(prot)], flags, file,
                                   int(pgoff) if kind == "file" else 0)
    if ret >= 0 and populate:
        await mm_populate(proc.mm, ret, populate)
    return ret


async def _munmap(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    return await sys_munmap(proc.mm, *_span(ctx, args))


async def _mprotect(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    return await sys_mprotect(proc.mm, *_span(ctx, args), PROTS[str(args[2])])


async def _mremap(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    addr, length = _span(ctx, args)
    new_len, mode, dest = int(args[2]) * PAGE, str(args[3]), page_addr(ctx.window, int(args[4]))
    flags = {"inplace": 0, "maymove": C.MREMAP_MAYMOVE,
             "fixed": C.MREMAP_MAYMOVE | C.MREMAP_FIXED,
             "dontunmap": C.MREMAP_MAYMOVE | C.MREMAP_FIXED | C.MREMAP_DONTUNMAP}[mode]
    if mode == "dontunmap":
        new_len = length                  # MREMAP_DONTUNMAP: same size only
    return await sys_mremap(proc.mm, addr, length, new_len, flags,
                            dest if flags & C.MREMAP_FIXED else 0)


async def _madvise(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    return await sys_madvise(proc.mm, *_span(ctx, args), getattr(C, f"MADV_{args[2]}"))


async def _ftruncate(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    """ftruncate(2) of /f to k pages (truncation: unmaps through every mm)."""
    file = proc.files.get(FILE_FD)
    if file is None:
        return -errno.EBADF
    await do_truncate(proc.mm.kernel, file.inode, int(args[0]) * PAGE)
    return 0


async def _punch(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    """fallocate(2) PUNCH_HOLE|KEEP_SIZE of n pages of /f at page k."""
    file = proc.files.get(FILE_FD)
    if file is None:
        return -errno.EBADF
    await shmem_punch_hole(proc.mm.kernel, file.inode, int(args[0]) * PAGE, int(args[1]) * PAGE)
    return 0


async def _fork_exit(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    """fork(); the child reads page ``args[0]`` (what it sees is the
    step's result) and exits."""
    child = await dup_mmap(proc.mm)
    try:
        seen: Any = await user_access(child, page_addr(ctx.window, int(args[0])), ACCESS_READ, 8)
    except SignalError as exc:
        seen = ("signal", type(exc).__name__, exc.si_code)
    except OutOfMemory:
        seen = ("oom",)
    await exit_mmap(child)
    return seen


async def _exit(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    """The thread exits: drop its mm_users; the last user tears the mm
    down (exit_mmap never races with a fault of its own mm: every other
    thread of the mm has exited)."""
    if await AtomicAdd(proc.mm, "mm_users", -1) == 0:
        await exit_mmap(proc.mm)
    return 0


async def _pin(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    """A driver's long-term read-only pin of page k (mm/gup.py: unshares a
    COW-shared page first), a DMA read of 8 bytes through it, the unpin;
    the other threads run between the three.  The result: what the device
    read, or -errno."""
    handle = await pin_user_pages(proc.mm, page_addr(ctx.window, int(args[0])), PAGE,
                                  longterm=True)
    if isinstance(handle, int):
        return handle
    try:
        return await gup_dma(handle, 0, 8)
    finally:
        await unpin_user_pages(handle)


async def _setup_fork(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
    raise AssertionError("fork() in setup is run by the API (compile.py)")


def _acc(access: int) -> Run:
    async def run(ctx: Ctx, world: Any, proc: Any, tag: bytes, args: tuple[Arg, ...]) -> Any:
        return await _access(ctx, world, proc, tag, args, access)
    return run


VOCAB: dict[str, OpKind] = {k.name: k for k in [
    OpKind("read", ("page",), _acc(ACCESS_READ), weight=6, syscall=False,
           doc="load 8 bytes from page k (a read fault if not mapped)"),
    OpKind("write", ("page",), _acc(ACCESS_WRITE), weight=9, syscall=False,
           doc="store the thread's tag at page k (a write fault, COW)"),
    OpKind("exec", ("page",), _acc(ACCESS_EXEC), weight=1, syscall=False,
           doc="fetch an instruction from page k"),
    OpKind("mmap", ("start", "count", "prot", "kind", "share", "place", "pgoff"), _mmap, weight=3,
           doc="mmap(2) of n pages at page k: anonymous or /f at pgoff, private or shared, "
               "MAP_FIXED, a hint, MAP_FIXED_NOREPLACE, or MAP_FIXED|MAP_POPULATE"),
    OpKind("munmap", ("start", "count"), _munmap, weight=3, doc="munmap(2) of n pages at page k"),
    OpKind("mprotect", ("start", "count", "prot"), _mprotect, weight=3,
           doc="mprotect(2) of n pages at page k"),
    OpKind("mremap", ("start", "count", "count", "mode", "start"), _mremap, weight=2,
           doc="mremap(2) of n pages at page k to m pages: in place, MAYMOVE, MAYMOVE|FIXED "
               "to page d, or MAYMOVE|FIXED|DONTUNMAP to page d"),
    OpKind("madvise", ("start", "count", "advice"), _madvise, weight=3,
           doc="madvise(2) of n pages at page k, any advice the model supports"),
    OpKind("ftruncate", ("pgoff",), _ftruncate, weight=1,
           doc="ftruncate(2) of /f to k pages: unmaps the rest from every mapping, "
               "without mmap_lock (mm/truncate.py)"),
    OpKind("punch", ("pgoff", "count"), _punch, weight=1,
           doc="fallocate(2) PUNCH_HOLE|KEEP_SIZE of n pages of /f at page k"),
    OpKind("fork_exit", ("page",), _fork_exit, where="thread", weight=2,
           doc="fork(2); the child reads page k and exits"),
    OpKind("pin", ("page",), _pin, where="thread", weight=1,
           doc="pin page k (FOLL_PIN|FOLL_LONGTERM, read-only), read 8 bytes through the "
               "pin as a device would, unpin"),
    OpKind("exit", (), _exit, where="thread", weight=1, last=True,
           doc="the thread exits (the mm's last user tears it down)"),
    OpKind("fork", (), _setup_fork, where="setup", weight=0,
           doc="setup only: fork a child process C1, C2, ... that stays alive"),
]}


def check_op(op: Op, prog: Program, setup: bool) -> None:
    """Raise ProgramError unless ``op`` fits the vocabulary and ``prog``."""
    kind = VOCAB.get(op.name)
    if kind is None:
        raise ProgramError(f"unknown op {op.name!r}; ops: {', '.join(VOCAB)}")
    if kind.where == ("thread" if setup else "setup"):
        raise ProgramError(f"{op.name} cannot be a {'setup' if setup else 'thread'} op")
    if len(op.args) != len(kind.params):
        raise ProgramError(f"{op.text()}: {op.name} takes {len(kind.params)} arguments "
                           f"({', '.join(kind.params)})")
    ctx = Ctx(prog.window, prog.file_pages)
    for p, v in zip(kind.params, op.args, strict=False):
        if not PARAMS[p].valid(v, ctx):
            raise ProgramError(f"{op.text()}: {p} must be {PARAMS[p].what}, not {v!r}")


def draw_op(rng: random.Random, ctx: Ctx, setup: bool = False,
            allow_last: bool = True) -> Op:
    """A random op of the vocabulary (for a thread, or the setup)."""
    kinds = [k for k in VOCAB.values() if k.weight and k.where in (("setup", "both") if setup
                                                                    else ("thread", "both"))
             and (allow_last or not k.last)]
    kind = rng.choices(kinds, [k.weight for k in kinds])[0]
    return Op(kind.name, tuple(PARAMS[p].draw(rng, ctx) for p in kind.params))


def coverage_kind(op: Op) -> str:
    """How coverage names the op when it is in flight beside a fault."""
    if op.name == "madvise":
        return f"madvise:{op.args[2]}"
    if op.name == "mmap":
        return f"mmap:{op.args[3]}"
    return op.name
