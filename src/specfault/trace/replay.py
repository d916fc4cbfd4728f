"""Replay a trace in the sequential model and compare it with the host.

Every event runs, in timestamp order, as the task that did it on the host:

exec
    a fresh mm laid out step by step as the kernel's ELF loader did it
    (mm/exec.py: the stack, each segment, bss, the interpreter's first
    segment where the model's get_unmapped_area puts it, the vDSO where
    map_vdso puts it), each step checked against the mapping perf
    reported for it;
sys
    the syscall (files become model files of the recorded sizes, every
    page cached — they were hot on the host); its result must equal the
    host's (the address mmap returned, each errno), and each mapping perf
    reported during it (the VMA after an mmap, each VMA an mprotect
    changed) must be the model's VMA there;
fault
    the access (read, write or instruction fetch, from the x86 error code)
    through the model's MMU and fault handler: a signal exactly where the
    host sent one (same signal and si_code), none elsewhere, and the page
    present and allowing the access afterwards;
clone
    ``CLONE_VM``: a thread of the parent's model process; otherwise a fork;
exit
    the task leaves its mm; with the last one the mm's layout is compared
    with the host's at that moment (/proc maps and VmFlags, taken by the
    recorder at the exit stop), then torn down.

What Linux did that the model does not model is never replayed silently:
it is counted under its name (``unsupported``) and the replay does not
agree.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import specfault as sf
from specfault.api import Process, _Context
from specfault.config import Config
from specfault.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_TYPE,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    TASK_SIZE,
)
from specfault.errors import BusError, OutOfMemory, SegmentationFault
from specfault.mm import exec as mexec
from specfault.mm.filemap import FMODE_READ, FMODE_WRITE, Inode, OpenFile, _fill
from specfault.mm.fork import exit_mmap
from specfault.mm.gup import mm_populate
from specfault.mm.madvise import sys_madvise
from specfault.mm.mm_struct import MmStruct
from specfault.mm.mmap import sys_brk, sys_mmap, sys_munmap
from specfault.mm.mprotect import sys_mprotect
from specfault.mm.mremap import sys_mremap
from specfault.mm.pgtable import LEVEL_SHIFT, huge_subpage_pte, hw_allows, pte_present
from specfault.mm.proc import vma_flags_mnemonics, vma_name
from specfault.mm.truncate import do_truncate
from specfault.mm.vma import VM_EXEC, VM_MAYSHARE, VM_READ, VM_WRITE
from specfault.runtime import ModelBug
from specfault.trace import format as fmt
from specfault.trace.describe import MADVICE, access_of, describe, map_str

CLONE_VM, CLONE_THREAD = 0x100, 0x10000
SIGBUS, SIGSEGV = 7, 11
O_ACCMODE_FMODE = {0: FMODE_READ, 1: FMODE_WRITE, 2: FMODE_READ | FMODE_WRITE, 3: 0}
_SHMEM_FS = ("tmpfs", "shmem", "ramfs", "devtmpfs", "hugetlbfs")
#: filesystems whose f_op->get_unmapped_area is thp_get_unmapped_area (Linux 6.18)
_THP_FS = ("ext4", "ext2", "xfs", "erofs")
#: syscalls the model does not model, and why (each is reported by name)
UNSUPPORTED = {
    "shmat": "SysV shared memory is not modelled",
    "shmdt": "SysV shared memory is not modelled",
    "mlock": "mlock is not modelled (VM_LOCKED splits VMAs and populates them)",
    "mlock2": "mlock is not modelled (VM_LOCKED splits VMAs and populates them)",
    "munlock": "mlock is not modelled",
    "mlockall": "mlockall is not modelled",
    "munlockall": "mlockall is not modelled",
    "remap_file_pages": "remap_file_pages is not modelled",
    "process_madvise": "process_madvise is not modelled",
    "mseal": "mseal is not modelled",
    "mbind": "NUMA memory policies are not modelled (mbind splits VMAs)",
    "userfaultfd": "userfaultfd is not modelled",
}
MAX_DIVERGENCES = 20


@dataclass
class Divergence:
    index: int                  # the event's position in the trace
    t: int
    tid: int
    what: str                   # "result" | "signal" | "page" | "mapping" | "layout" | "model error"
    event: str                  # the event, described
    host: Any
    model: Any
    detail: str = ""
    context: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "t": self.t, "tid": self.tid, "what": self.what,
                "event": self.event, "host": self.host, "model": self.model,
                "detail": self.detail, "context": self.context}


@dataclass
class Tally:
    agree: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.total += 1
        self.agree += ok


@dataclass
class ReplayResult:
    trace: str
    protocol: str
    events: int = 0                          # events replayed
    of: int = 0                              # events in the trace
    syscalls: dict[str, Tally] = field(default_factory=dict)
    faults: Tally = field(default_factory=Tally)
    kfaults: Tally = field(default_factory=Tally)
    signals: int = 0                         # faults the host signalled (and the model too)
    already: int = 0                         # faults the model did not need (page present)
    mappings: Tally = field(default_factory=Tally)
    layouts: Tally = field(default_factory=Tally)
    present: dict[str, int] = field(default_factory=dict)
    unsupported: dict[str, int] = field(default_factory=dict)
    divergences: list[Divergence] = field(default_factory=list)
    n_divergences: int = 0
    notes: list[str] = field(default_factory=list)
    partial: bool = False
    seconds: float = 0.0

    @property
    def agreed(self) -> bool:
        return not self.n_divergences and not self.unsupported and not self.partial

    def totals(self) -> tuple[int, int]:
        parts = [*self.syscalls.values(), self.faults, self.kfaults, self.mappings, self.layouts]
        return sum(t.agree for t in parts), sum(t.total for t in parts)

    def to_json(self) -> dict[str, Any]:
        agree, total = self.totals()
        return {
            "trace": self.trace, "protocol": self.protocol, "events": self.events, "of": self.of,
            "agreed": self.agreed, "agree": agree, "compared": total,
            "syscalls": {k: [v.agree, v.total] for k, v in sorted(self.syscalls.items())},
            "faults": [self.faults.agree, self.faults.total],
            "kernel_faults": [self.kfaults.agree, self.kfaults.total],
            "signals": self.signals, "model_already_present": self.already,
            "mappings": [self.mappings.agree, self.mappings.total],
            "layouts": [self.layouts.agree, self.layouts.total], "present_at_exit": self.present,
            "unsupported": self.unsupported, "divergences": self.n_divergences,
            "first_divergences": [d.to_json() for d in self.divergences], "notes": self.notes,
            "partial": self.partial, "seconds": round(self.seconds, 3)}


def get_pte(mm: Any, addr: int) -> int:
    """The PTE mapping ``addr`` (0 if a table on the way is missing), read
    directly between events (no task runs)."""
    table = mm.pgd
    while table.level > 1:
        table = table.entries[(addr >> LEVEL_SHIFT[table.level]) & 511]
        if table is None:
            return 0
        if type(table) is int:
            return huge_subpage_pte(table, addr)       # a huge PMD
    return int(table.entries[(addr >> 12) & 511])


def model_perm(vma: Any) -> str:
    f = vma.vm_flags
    return ("r" if f & VM_READ else "-") + ("w" if f & VM_WRITE else "-") \
        + ("x" if f & VM_EXEC else "-") + ("s" if f & VM_MAYSHARE else "p")


class _Task:
    """A traced task in the model: its context (Process or Thread), the
    model process owning its mm, its thread-group id."""

    __slots__ = ("ctx", "proc", "tgid", "comm")

    def __init__(self, ctx: _Context, proc: Process, tgid: int, comm: str) -> None:
        self.ctx = ctx
        self.proc = proc
        self.tgid = tgid
        self.comm = comm


class Replayer:
    def __init__(self, trace: fmt.Trace, protocol: str = "classic", name: str = "<trace>",
                 config: Config | None = None) -> None:
        self.trace = trace
        self.files = trace.files
        self.res = ReplayResult(name, protocol, of=len(trace.events))
        self.extent = self._extents()
        frames = sum((self._size(fid) + PAGE_SIZE - 1) // PAGE_SIZE for fid in self.files)
        nfaults = sum(1 for e in trace.events if e["k"] == "fault")
        frames += 4 * nfaults + (1 << 16)
        base = config or Config()
        self.m = sf.Machine(config=base.with_(fault_protocol=protocol, nr_frames=frames))
        kernel = self.m.kernel
        rl = trace.header.get("rlimit_stack", 8 << 20)
        self.rlimit_stack = rl
        self.mmap_min_addr = trace.header.get("mmap_min_addr") or 65536
        self.inodes: dict[int, Inode] = {}
        self.ino_of: dict[int, int] = {}               # id(Inode) -> trace file id
        self.refs: list[OpenFile] = []                 # one reference per file: never truncated
        self.tasks: dict[int, _Task] = {}
        self.users: dict[int, set[int]] = {}           # id(mm) -> tids using it
        self.finals = {(f["pid"], f.get("tid")): f for f in trace.finals}
        self.ofds: dict[int, OpenFile] = {}           # open file description -> struct file
        self.history: dict[int, list[str]] = {}
        self._kernel = kernel

    # ------------------------------------------------------------ files
    def _extents(self) -> dict[int, int]:
        ext: dict[int, int] = {}

        def see(m: list[Any]) -> None:
            fid = m[fmt.MAP_FILE]
            if fid >= 0:
                ext[fid] = max(ext.get(fid, 0), m[fmt.MAP_OFF] + m[fmt.MAP_END] - m[fmt.MAP_START])
        for ev in self.trace.events:
            for m in ev.get("maps", ()):
                see(m)
        for f in self.trace.finals:
            for m in f["maps"]:
                see(m)
        return ext

    def _size(self, fid: int) -> int:
        size = self.files[fid].get("size")
        return int(size) if size is not None else self.extent.get(fid, 0)

    def inode(self, fid: int) -> Inode:
        got = self.inodes.get(fid)
        if got is not None:
            return got
        info = self.files[fid]
        fs = self.m.kernel.fs
        path = info["name"]
        if path in fs.inodes:
            path = f"{path} (#{fid})"
        shmem = info.get("fs") in _SHMEM_FS or path.startswith(("/memfd:", "/dev/shm/", "/SYSV"))
        inode = Inode(next(fs._ino), path, shmem=shmem)
        inode.size = self._size(fid)
        if shmem:
            inode.dev = (0, 1)
        inode.thp_get_unmapped_area = info.get("fs") in _THP_FS
        fs.inodes[path] = inode
        self.refs.append(OpenFile(inode, FMODE_READ))      # the name keeps it alive
        self.inodes[fid] = inode
        self.ino_of[id(inode)] = fid
        return inode

    def cache(self, inode: Inode, pgoff: int, npages: int) -> None:
        """The pages of [pgoff, pgoff+npages) in the page cache (they were
        hot on the host: fault-around maps them as it did there)."""
        if inode.shmem:
            return                               # shmem pages appear when written
        mem = self.m.kernel.mem
        for idx in range(pgoff, min(pgoff + npages, inode.nr_pages())):
            if idx not in inode.pages:
                page = mem.alloc()
                if page is None:
                    raise OutOfMemory(errno.ENOMEM, "replay: page cache")
                _fill(inode, idx, page, mem)

    def open_file(self, fid: int, mode: int | None, flags: int, prot: int,
                  ofd: int | None = None) -> OpenFile:
        """The struct file an mmap maps: the same object for every mmap of
        one open file description (``ofd``: VMAs merge only when their
        vm_file is the same), with the fd's access mode (unknown: read,
        and write for a shared writable mapping or a tmpfs file)."""
        if ofd is not None and ofd in self.ofds:
            f = self.ofds[ofd]
            f.f_count += 1
            return f
        inode = self.inode(fid)
        if mode is None:
            fmode = FMODE_READ
            if inode.shmem or (flags & MAP_TYPE != MAP_PRIVATE and prot & PROT_WRITE):
                fmode |= FMODE_WRITE
        else:
            fmode = O_ACCMODE_FMODE[mode & 3]
        f = OpenFile(inode, fmode)
        if ofd is not None:
            self.ofds[ofd] = f
            f.f_count += 1                        # the fd's own reference, never dropped
        return f

    # ------------------------------------------------------------ results
    def diverge(self, i: int, ev: dict[str, Any], what: str, host: Any, model: Any,
                detail: str = "") -> None:
        self.res.n_divergences += 1
        if len(self.res.divergences) < MAX_DIVERGENCES:
            ctx = list(self.history.get(ev["tid"], []))
            self.res.divergences.append(Divergence(i, ev["t"], ev["tid"], what,
                                                   describe(ev, self.files), host, model, detail, ctx))

    def unsupported(self, name: str) -> None:
        self.res.unsupported[name] = self.res.unsupported.get(name, 0) + 1

    def run_model(self, t: _Task, coro: Any) -> Any:
        return t.ctx._run(coro)

    # ------------------------------------------------------------ mappings
    def vma_record(self, mm: Any, addr: int) -> list[Any] | None:
        """The model's VMA at ``addr`` as a mapping record."""
        vma = mm.vma_lookup(addr)
        if vma is None:
            return None
        if vma.vm_file is not None:
            fid = self.ino_of.get(id(vma.vm_file.inode), -1)
            name = "" if fid >= 0 else vma.vm_file.inode.path
            return [vma.vm_start, vma.vm_end, model_perm(vma), vma.vm_pgoff << 12, fid, name]
        name = vma_name(mm, vma)
        return [vma.vm_start, vma.vm_end, model_perm(vma), 0, -1, name if name.startswith("[") else ""]

    @staticmethod
    def same(host: list[Any], model: list[Any] | None, names: bool = False) -> bool:
        if model is None:
            return False
        if host[:3] != model[:3] or host[fmt.MAP_FILE] != model[fmt.MAP_FILE]:
            return False
        if host[fmt.MAP_FILE] >= 0 and host[fmt.MAP_OFF] != model[fmt.MAP_OFF]:
            return False
        hname = host[fmt.MAP_NAME]
        if hname == "/dev/zero (deleted)":
            return model[fmt.MAP_NAME] == hname or model[fmt.MAP_FILE] < 0
        if names and hname in ("[vdso]", "[vvar]", "[vvar_vclock]", "[heap]", "[stack]"):
            return bool(model[fmt.MAP_NAME] == hname)
        return True

    def check_maps(self, i: int, ev: dict[str, Any], mm: Any, maps: list[list[Any]]) -> None:
        """Each mapping perf reported during the event, but for those a later
        one of the same event covers (a VMA changed twice), must be the
        model's VMA there now."""
        for j, rec in enumerate(maps):
            later = maps[j + 1:]
            if any(r[0] < rec[1] and rec[0] < r[1] for r in later):
                continue
            got = self.vma_record(mm, rec[0])
            ok = self.same(rec, got, names=True)
            self.res.mappings.add(ok)
            if not ok:
                self.diverge(i, ev, "mapping", map_str(rec, self.files),
                             map_str(got, self.files) if got else "no VMA",
                             "the VMA perf reported differs from the model's")

    # ------------------------------------------------------------ events
    def run(self, progress: Callable[[int], None] | None = None) -> ReplayResult:
        t0 = time.monotonic()
        try:
            for i, ev in enumerate(self.trace.events):
                self.step(i, ev)
                self.res.events = i + 1
                hist = self.history.setdefault(ev["tid"], [])
                hist.append(describe(ev, self.files))
                if len(hist) > 4:
                    del hist[0]
                if progress is not None and not i & 1023:
                    progress(i)
            self.finish()
        except KeyboardInterrupt:
            self.res.partial = True
        self.res.seconds = time.monotonic() - t0
        return self.res

    def step(self, i: int, ev: dict[str, Any]) -> None:
        k = ev["k"]
        try:
            if k == "exec":
                self.on_exec(i, ev)
            elif k == "sys":
                self.on_sys(i, ev)
            elif k == "fault":
                self.on_fault(i, ev)
            elif k == "clone":
                self.on_clone(i, ev)
            elif k == "exit":
                self.on_exit(i, ev)
            elif k == "signal":
                self.unsupported(f"signal {ev['sig']} not raised by a recorded fault")
        except (ModelBug, OutOfMemory, AssertionError, OSError) as exc:
            self.diverge(i, ev, "model error", "-", f"{type(exc).__name__}: {exc}")

    def task(self, tid: int) -> _Task | None:
        return self.tasks.get(tid)

    def _join(self, tid: int, t: _Task) -> None:
        self.tasks[tid] = t
        self.users.setdefault(id(t.ctx.mm), set()).add(tid)

    def _leave(self, tid: int) -> tuple[_Task, bool] | None:
        """``tid`` leaves its mm (one mm_users count less); True if it was
        the last task using it (the caller tears the mm down)."""
        t = self.tasks.pop(tid, None)
        if t is None:
            return None
        mm = t.ctx.mm
        users = self.users.get(id(mm), set())
        users.discard(tid)
        if users:
            mm.mm_users -= 1
        return t, not users

    # -- exec --
    def on_exec(self, i: int, ev: dict[str, Any]) -> None:
        tid = ev["tid"]
        comm = self.trace.tasks.get(tid, {}).get("comm", "")
        old = self.tasks.get(tid)
        if old is None or not isinstance(old.ctx, Process):
            if old is not None:
                self._leave(tid)                 # a vfork child leaves its parent's mm
            proc = self.m.spawn(comm)
        else:
            proc = old.proc
            left = self._leave(tid)
            if left is not None and left[1]:
                self.m.run(exit_mmap(proc.mm), proc.task)
            mm = MmStruct(self.m.kernel)
            self.m.kernel.mms.append(mm)
            proc.mm = mm
            proc.task.mm = mm
        proc.mm.mmap_min_addr = self.mmap_min_addr
        t = _Task(proc, proc, ev["pid"], comm)
        self._join(tid, t)
        checks = self.m.run(self.exec_steps(proc.mm, ev), proc.task)
        for rec, got in checks:
            ok = self.same(rec, got, names=True)
            self.res.mappings.add(ok)
            if not ok:
                self.diverge(i, ev, "mapping", map_str(rec, self.files),
                             map_str(got, self.files) if got else "no VMA",
                             "exec laid out this mapping differently")
        for addr, err in ev.get("kfaults", ()):
            self.access(i, ev, t, addr, err, user=False, sig=None)

    async def exec_steps(self, mm: Any, ev: dict[str, Any]) -> list[tuple[list[Any], Any]]:
        """The loader's steps, one per mapping perf reported at exec (see
        the module docstring); returns (record, model VMA record) pairs."""
        recs = ev["maps"]
        checks: list[tuple[list[Any], Any]] = []
        rl = self.rlimit_stack
        mm.rlimit_stack = (1 << 63) if rl is None else rl
        stack = [r for r in recs if r[fmt.MAP_NAME] == "[stack]"]
        if stack:
            size = stack[0][1] - stack[0][0]
            arg_pages = max(1, (size - mexec.STACK_EXPAND) // PAGE_SIZE)
            await mexec.bprm_mm_init(mm)
            await mexec.copy_strings(mm, arg_pages)
            mm.start_stack = mexec.STACK_TOP - arg_pages * PAGE_SIZE
            vma = mm.find_vma(mexec.STACK_TOP - PAGE_SIZE)
            await mexec.setup_arg_pages(mm, vma, "x" in stack[0][2])
            checks.append((stack[0], self.vma_record(mm, stack[0][0])))
        mm.mmap_base = mexec.mmap_base(rl)
        seen: list[int] = []
        brk = 0
        vdso_done = False
        images: dict[int, OpenFile] = {}              # bprm->file, the interpreter's file
        for j, rec in enumerate(recs):
            start, end, perm, off, fid, name = rec
            prot = (PROT_READ if perm[0] == "r" else 0) | (PROT_WRITE if perm[1] == "w" else 0) \
                | (PROT_EXEC if perm[2] == "x" else 0)
            if name == "[stack]":
                continue
            if name in ("[vdso]", "[vvar]", "[vvar_vclock]"):
                if not vdso_done:
                    sizes = {r[fmt.MAP_NAME]: r[1] - r[0] for r in recs}
                    image = mexec.VdsoImage(sizes.get("[vvar]", 0), sizes.get("[vvar_vclock]", 0),
                                            sizes.get("[vdso]", 0))
                    await mexec.map_vdso(mm, image)
                    vdso_done = True
                checks.append((rec, self.vma_record(mm, start)))
                continue
            if fid >= 0:
                first = fid not in seen
                if first:
                    seen.append(fid)
                if fid not in images:
                    images[fid] = self.open_file(fid, 0, MAP_PRIVATE, prot)
                file = images[fid]
                file.f_count += 1
                self.cache(file.inode, off >> 12, (end - start) >> 12)
                if first and len(seen) > 1:
                    addr, flags = 0, MAP_PRIVATE                 # the interpreter
                elif first:
                    addr, flags = start, MAP_PRIVATE | MAP_FIXED_NOREPLACE
                else:
                    addr, flags = start, MAP_PRIVATE | MAP_FIXED
                got = await mexec.vm_mmap(mm, file, addr, end - start, prot, flags, off)
                self.m.kernel.fs.fput(file)
                checks.append((rec, self.vma_record(mm, start) if got == start
                               else (self.vma_record(mm, got) if got >= 0 else None)))
                if got < 0:
                    continue
                if first:
                    # elf_map() mapped the whole image; what lies past the
                    # first segment goes (the next segment starts there)
                    nxt = next((r for r in recs[j + 1:] if r[fmt.MAP_FILE] == fid), None)
                    if nxt is not None and got < nxt[0] < got + (end - start):
                        await mexec.vm_munmap(mm, nxt[0], got + (end - start) - nxt[0])
                if len(seen) == 1:
                    brk = max(brk, end)
                continue
            if name == "":
                await mexec.vm_brk_flags(mm, start, end - start, VM_EXEC if "x" in perm else 0)
                checks.append((rec, self.vma_record(mm, start)))
                if len(seen) == 1:
                    brk = max(brk, end)
                continue
            self.unsupported(f"exec mapping {name}")
        for f in images.values():
            self.m.kernel.fs.fput(f)
        mm.start_brk = mm.brk = brk
        return checks

    # -- clone / exit --
    def on_clone(self, i: int, ev: dict[str, Any]) -> None:
        parent = self.task(ev["tid"])
        if parent is None:
            return
        flags = ev.get("flags")
        comm = self.trace.tasks.get(ev["child"], {}).get("comm", parent.comm)
        if flags is None:
            shared = ev["child_pid"] == parent.tgid
            self.res.notes.append(f"clone of {ev['child']}: flags not recorded; "
                                  f"{'a thread' if shared else 'a fork'} inferred from its pid")
        else:
            shared = bool(flags & CLONE_VM)
        if shared:
            th = parent.proc.thread()
            if parent.ctx.mm is not parent.proc.mm:     # a task of a vfork child's borrowed mm
                th.mm = parent.ctx.mm
            self._join(ev["child"], _Task(th, parent.proc, ev["child_pid"], comm))
        else:
            child = parent.proc.fork()
            child.mm.mmap_min_addr = self.mmap_min_addr
            self._join(ev["child"], _Task(child, child, ev["child_pid"], comm))

    def on_exit(self, i: int, ev: dict[str, Any]) -> None:
        left = self._leave(ev["tid"])
        if left is None:
            return
        t, last = left
        if not last:
            return
        final = self.finals.pop((t.tgid, ev["tid"]), None)
        if final is None:
            final = next((v for (pid, _), v in self.finals.items() if pid == t.tgid), None)
            if final is not None:
                self.finals = {k: v for k, v in self.finals.items() if v is not final}
        if final is not None:
            self.compare_final(i, ev, t.ctx.mm, final)
        if t.ctx.mm is t.proc.mm:
            t.proc.exit()
        elif not t.ctx.mm.dead:
            self.m.run(exit_mmap(t.ctx.mm), t.proc.task)

    # -- the final layout --
    def compare_final(self, i: int, ev: dict[str, Any], mm: Any, final: dict[str, Any]) -> None:
        host = [m for m in final["maps"] if m[0] < TASK_SIZE]
        hflags = [f for m, f in zip(final["maps"], final.get("vmflags", []), strict=False)
                  if m[0] < TASK_SIZE]
        model = [self.vma_record(mm, v.vm_start) for v in mm.vmas()]
        mflags = [" ".join(f for f in vma_flags_mnemonics(v.vm_flags) if f != "sd")
                  for v in mm.vmas()]
        ok = len(host) == len(model) and all(self.same(h, m, names=True)
                                             for h, m in zip(host, model, strict=True))
        if ok and hflags:
            ok = [f.split() for f in hflags] == [f.split() for f in mflags]
        self.res.layouts.add(ok)
        if not ok:
            diff = _first_layout_difference(host, model, hflags, mflags, self.files)
            self.diverge(i, ev, "layout", diff[0], diff[1],
                         f"the address space at exit differs ({len(host)} VMAs on the host, "
                         f"{len(model)} in the model)")
        # pages present at exit (reported, not compared: the host's page
        # cache, readahead and kernel accesses decide some of them)
        hpages = set()
        for start, n in final.get("present", ()):
            hpages.update(range(start >> 12, (start >> 12) + n))
        mpages = set()
        for v in mm.vmas():
            for a in range(v.vm_start, v.vm_end, PAGE_SIZE):
                if pte_present(get_pte(mm, a)):
                    mpages.add(a >> 12)
        p = self.res.present
        p["host"] = p.get("host", 0) + len(hpages)
        p["model"] = p.get("model", 0) + len(mpages)
        p["host_only"] = p.get("host_only", 0) + len(hpages - mpages)
        p["model_only"] = p.get("model_only", 0) + len(mpages - hpages)

    def finish(self) -> None:
        for (pid, _tid), final in list(self.finals.items()):
            live = next((t for t in self.tasks.values() if t.tgid == pid), None)
            if live is not None:
                self.compare_final(len(self.trace.events), {"t": final["t"], "tid": live.ctx.task.tid,
                                                            "k": "exit"}, live.ctx.mm, final)

    # -- faults --
    def on_fault(self, i: int, ev: dict[str, Any]) -> None:
        t = self.task(ev["tid"])
        if t is None:
            return
        self.access(i, ev, t, ev["addr"], ev["err"], ev["user"], ev.get("sig"))
        if ev.get("maps"):                        # the stack grew
            self.check_maps(i, ev, t.ctx.mm, ev["maps"])

    def access(self, i: int, ev: dict[str, Any], t: _Task, addr: int, err: int, user: bool,
               sig: list[int] | None) -> None:
        tally = self.res.faults if user else self.res.kfaults
        if err & 0x20:
            self.unsupported("page fault with a protection-key violation (PF_PK)")
            return
        kind = access_of(err)
        mm = t.ctx.mm
        before = get_pte(mm, addr)
        got: list[int] | None = None
        try:
            if kind == "write":
                t.ctx._access(addr, 1, 0, b"")
            elif kind == "exec":
                t.ctx._access(addr, 2, 0)
            else:
                t.ctx._access(addr, 0, 1)
        except SegmentationFault as e:
            got = [SIGSEGV, e.si_code]
        except BusError as e:
            got = [SIGBUS, e.si_code]
        if sig is not None or got is not None:
            ok = got == sig
            tally.add(ok)
            if ok:
                self.res.signals += 1
            else:
                self.diverge(i, ev, "signal", _sig_str(sig), _sig_str(got),
                             f"a {kind} at {addr:#x}")
            return
        pte = get_pte(mm, addr)
        ok = pte_present(pte) and hw_allows(pte, kind == "write", kind == "exec")
        tally.add(ok)
        if ok and pte == before:
            self.res.already += 1
        if not ok:
            self.diverge(i, ev, "page", "present", f"pte {pte:#x}",
                         f"after the {kind} at {addr:#x} the page is not mapped for it")

    # -- syscalls --
    def on_sys(self, i: int, ev: dict[str, Any]) -> None:
        name = ev["name"]
        t = self.task(ev["tid"])
        if t is None:
            return
        if name in UNSUPPORTED:
            self.unsupported(f"{name} ({UNSUPPORTED[name]})")
            return
        handler = getattr(self, f"sys_{name}", None)
        if handler is None:
            return                                   # bookkeeping calls (shmget...)
        got = handler(t, ev)
        if got is _SKIP:
            return
        host = ev["ret"]
        tally = self.res.syscalls.setdefault(name, Tally())
        ok = got == host
        tally.add(ok)
        if not ok:
            self.diverge(i, ev, "result", _ret(host), _ret(got))
        if ev.get("maps"):
            self.check_maps(i, ev, t.ctx.mm, ev["maps"])

    def sys_mmap(self, t: _Task, ev: dict[str, Any]) -> Any:
        addr, length, prot, flags, fd, off = ev["args"][:6]
        file = None
        if not flags & MAP_ANONYMOUS:
            if "file" not in ev:
                self.unsupported("mmap of an fd the trace does not identify (it failed on the host "
                                 "before the file was seen)")
                return _SKIP
            file = self.open_file(ev["file"], ev.get("fmode"), flags, prot, ev.get("ofd"))
        elif flags & MAP_HUGETLB:
            self.unsupported("mmap MAP_HUGETLB (hugetlbfs is not modelled)")
            return _SKIP
        if off & (PAGE_SIZE - 1):
            return -errno.EINVAL
        try:
            ret, populate = t.ctx._run(sys_mmap(t.ctx.mm, addr, length, prot, flags, file, off >> 12))
            if ret >= 0 and file is not None:
                self.cache(file.inode, off >> 12, (length + PAGE_SIZE - 1) >> 12)
            if ret >= 0 and populate:
                t.ctx._run(mm_populate(t.ctx.mm, ret, populate))
        finally:
            if file is not None:
                self.m.kernel.fs.fput(file)
        return ret

    def sys_munmap(self, t: _Task, ev: dict[str, Any]) -> Any:
        a = ev["args"]
        return t.ctx._run(sys_munmap(t.ctx.mm, a[0], a[1]))

    def sys_mprotect(self, t: _Task, ev: dict[str, Any]) -> Any:
        a = ev["args"]
        return t.ctx._run(sys_mprotect(t.ctx.mm, a[0], a[1], a[2]))

    def sys_pkey_mprotect(self, t: _Task, ev: dict[str, Any]) -> Any:
        a = ev["args"]
        if (a[3] & 0xFFFFFFFF) != 0xFFFFFFFF:
            self.unsupported("pkey_mprotect with a protection key (pkeys are not modelled)")
            return _SKIP
        return t.ctx._run(sys_mprotect(t.ctx.mm, a[0], a[1], a[2]))

    def sys_mremap(self, t: _Task, ev: dict[str, Any]) -> Any:
        a = ev["args"]
        return t.ctx._run(sys_mremap(t.ctx.mm, a[0], a[1], a[2], a[3], a[4]))

    def sys_madvise(self, t: _Task, ev: dict[str, Any]) -> Any:
        a = ev["args"]
        advice = a[2] & 0xFFFFFFFF
        advice = advice - (1 << 32) if advice >= 1 << 31 else advice
        if advice in (sf.MADV_GUARD_INSTALL, sf.MADV_GUARD_REMOVE):
            self.unsupported(f"madvise {MADVICE[advice]} (guard regions are not modelled)")
            return _SKIP
        return t.ctx._run(sys_madvise(t.ctx.mm, a[0], a[1], advice))

    def sys_brk(self, t: _Task, ev: dict[str, Any]) -> Any:
        return t.ctx._run(sys_brk(t.ctx.mm, ev["args"][0]))

    def sys_ftruncate(self, t: _Task, ev: dict[str, Any]) -> Any:
        """Not compared (not a memory syscall): the file's size follows the
        host's, so later faults past its end agree."""
        if ev["ret"] != 0 or "file" not in ev:
            return _SKIP
        inode = self.inode(ev["file"])
        self.m.run(do_truncate(self.m.kernel, inode, ev["args"][1]), t.ctx.task)   # shmem_setattr
        return _SKIP


_SKIP = object()


def _ret(r: Any) -> str:
    if isinstance(r, int):
        return f"-1 {errno.errorcode.get(-r, -r)}" if -4096 < r < 0 else hex(r)
    return str(r)


def _sig_str(sig: list[int] | None) -> str:
    if sig is None:
        return "no signal"
    name = {SIGSEGV: "SIGSEGV", SIGBUS: "SIGBUS"}.get(sig[0], str(sig[0]))
    code = {(SIGSEGV, 1): "SEGV_MAPERR", (SIGSEGV, 2): "SEGV_ACCERR", (SIGBUS, 2): "BUS_ADRERR",
            (SIGSEGV, 0x80): "SI_KERNEL"}.get((sig[0], sig[1]), str(sig[1]))
    return f"{name} {code}"


def _first_layout_difference(host: list[Any], model: list[Any], hflags: list[str],
                             mflags: list[str], files: dict[int, Any]) -> tuple[str, str]:
    for j in range(max(len(host), len(model))):
        h = host[j] if j < len(host) else None
        m = model[j] if j < len(model) else None
        if h is None or m is None or not Replayer.same(h, m, names=True):
            return (map_str(h, files) if h else "(no more VMAs)",
                    map_str(m, files) if m else "(no more VMAs)")
        if j < len(hflags) and j < len(mflags) and hflags[j].split() != mflags[j].split():
            return (f"{map_str(h, files)}  VmFlags: {hflags[j]}",
                    f"{map_str(m, files)}  VmFlags: {mflags[j]}")
    return ("?", "?")


def replay(trace: fmt.Trace, protocol: str = "classic", name: str = "<trace>",
           progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Replay ``trace`` under ``protocol``; see the module docstring."""
    return Replayer(trace, protocol, name).run(progress)


def iter_lines(res: ReplayResult, files: dict[int, Any]) -> Iterator[str]:
    """The human report of a replay."""
    agree, total = res.totals()
    pct = 100.0 * agree / total if total else 100.0
    yield (f"{res.trace}: replayed under {res.protocol}: {res.events:,} of {res.of:,} events "
           f"in {res.seconds:.1f} s" + (" (partial: interrupted)" if res.partial else ""))
    calls = ", ".join(f"{k} {v.agree}/{v.total}" for k, v in sorted(res.syscalls.items()))
    sys_a = sum(v.agree for v in res.syscalls.values())
    sys_t = sum(v.total for v in res.syscalls.values())
    yield f"  syscalls  {sys_a:,}/{sys_t:,} results agree ({calls or 'none'})"
    yield (f"  faults    {res.faults.agree:,}/{res.faults.total:,} user, {res.kfaults.agree:,}/"
           f"{res.kfaults.total:,} kernel agree ({res.signals} signalled as on the host; "
           f"{res.already:,} found the page already mapped)")
    yield f"  mappings  {res.mappings.agree:,}/{res.mappings.total:,} reported by perf agree"
    line = f"  layouts   {res.layouts.agree}/{res.layouts.total} at exit agree (VMAs and VmFlags)"
    if res.present:
        p = res.present
        line += (f"; pages present at exit: host {p['host']:,}, model {p['model']:,} "
                 f"(host only {p['host_only']:,}, model only {p['model_only']:,})")
    yield line
    for what, n in sorted(res.unsupported.items()):
        yield f"  not modelled: {what} x{n}"
    for note in res.notes[:5]:
        yield f"  note: {note}"
    yield (f"agreement: {agree:,}/{total:,} ({pct:.2f}%), {res.n_divergences} divergence(s)"
           + (", and what the model does not model (above)" if res.unsupported else ""))
    if res.divergences:
        d = res.divergences[0]
        yield ""
        yield f"first divergence: event {d.index} at {d.t / 1e6:.3f} ms, task {d.tid}: {d.what}"
        for c in d.context:
            yield f"      {c}"
        yield f"  >>> {d.event}"
        yield f"  host:  {d.host}"
        yield f"  model: {d.model}"
        if d.detail:
            yield f"  ({d.detail})"
