"""The synchronous facade users meet first: Machine, Process, Thread.

Each call runs the model's async code to completion with the direct driver
(ops performed inline), then lets RCU callbacks run — between top-level
calls nobody is inside a read-side section.  Errors come back as Linux
would give them: ``OSError`` with the errno, ``SegmentationFault`` /
``BusError`` for a bad access.

Arguments are checked first, before anything changes: an argument of the
wrong type (a bool, float or str where an int is wanted; anything but
bytes, bytearray or memoryview where bytes are wanted) is a ``TypeError``,
an int outside the C type of the syscall's parameter (a negative length,
an address past 2**64, an fd beyond ``int``) or a flag the model does not
model is a ``ValueError``; each names the argument.  An int the C type can
carry goes to the model, which answers with Linux's errno.

    >>> import specfault as sf
    >>> m = sf.Machine()
    >>> p = m.spawn()
    >>> a = p.mmap(0, 8192, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    >>> p.write(a, b"hi"); p.read(a, 2)
    b'hi'
"""

from __future__ import annotations

import errno
import operator
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from specfault.config import KNOBS, Config, UnknownKnob
from specfault.constants import (
    FALLOC_FL_COLLAPSE_RANGE,
    FALLOC_FL_INSERT_RANGE,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_UNSHARE_RANGE,
    FALLOC_FL_WRITE_ZEROES,
    FALLOC_FL_ZERO_RANGE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    O_ACCMODE,
    O_APPEND,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECT,
    O_DIRECTORY,
    O_DSYNC,
    O_EXCL,
    O_LARGEFILE,
    O_NOATIME,
    O_NOCTTY,
    O_NOFOLLOW,
    O_NONBLOCK,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_SYNC,
    O_TMPFILE,
    O_TRUNC,
    O_WRONLY,
    PAGE_SIZE,
    SEGV_MAPERR,
    SI_KERNEL,
    TASK_SIZE,
)
from specfault.errors import SegmentationFault
from specfault.mm.access import PageFault, hw_access, user_access
from specfault.mm.exec import VDSO_X86_64, ElfImage, ExecError, ExecLayout, VdsoImage, load_elf_binary
from specfault.mm.fault import ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE
from specfault.mm.filemap import FMODE_READ, FMODE_WRITE, OpenFile
from specfault.mm.fork import dup_mmap, exit_mmap
from specfault.mm.gup import mm_populate
from specfault.mm.kernel import Kernel
from specfault.mm.khugepaged import KHUGEPAGED_PAGES_TO_SCAN, khugepaged_do_scan
from specfault.mm.madvise import sys_madvise
from specfault.mm.mm_struct import MmStruct
from specfault.mm.mmap import sys_brk, sys_mmap, sys_munmap
from specfault.mm.mprotect import sys_mprotect
from specfault.mm.mremap import sys_mremap
from specfault.mm.page import LRU_NAMES
from specfault.mm.proc import PagemapEntry, maps, pagemap_entry, smaps
from specfault.mm.swapfile import nr_swap_pages, total_swap_pages
from specfault.mm.truncate import do_truncate, shmem_punch_hole
from specfault.mm.vmscan import kswapd_run
from specfault.runtime import STATE, Task, direct

T = TypeVar("T")
_ACCESS = {"read": ACCESS_READ, "write": ACCESS_WRITE, "exec": ACCESS_EXEC}

# open(2) flags: modelled, accepted without effect (no observable
# difference in the model), and known to Linux but not modelled
_O_MODELLED = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC
_O_NO_EFFECT = O_NOCTTY | O_NONBLOCK | O_DSYNC | O_SYNC | O_LARGEFILE | O_NOFOLLOW | O_NOATIME \
    | O_CLOEXEC
_O_NOT_MODELLED = {O_TMPFILE: "O_TMPFILE", O_APPEND: "O_APPEND", O_DIRECT: "O_DIRECT",
                   O_DIRECTORY: "O_DIRECTORY", O_PATH: "O_PATH"}
MAX_RW_COUNT = 0x7FFFF000               # INT_MAX & PAGE_MASK: the most one read returns
MAX_LFS_FILESIZE = (1 << 63) - 1         # tmpfs's s_maxbytes
# FALLOC_FL_MODE_MASK (Linux 6.18): the modes vfs_fallocate() knows
FALLOC_FL_MODE_MASK = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_ZERO_RANGE \
    | FALLOC_FL_INSERT_RANGE | FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_WRITE_ZEROES


def SegmentationFault_(addr: int) -> SegmentationFault:  # noqa: N802
    return SegmentationFault(addr, SEGV_MAPERR)


# ------------------------------------------------------ argument checking
def _int(what: str, name: str, value: Any) -> int:
    """``value`` as an int: an int (or anything with __index__), not a bool."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{what}: {name} must be an int, not {type(value).__name__}")
    return operator.index(value)


def _ulong(what: str, name: str, value: Any) -> int:
    """An ``unsigned long`` (or ``size_t``) argument: 0 <= value < 2**64."""
    v = _int(what, name, value)
    if not 0 <= v < 1 << 64:
        raise ValueError(f"{what}: {name} must be in [0, 2**64) (unsigned long), not {v}")
    return v


def _cint(what: str, name: str, value: Any) -> int:
    """An ``int`` argument (fd, advice, open flags): -2**31 <= value < 2**31."""
    v = _int(what, name, value)
    if not -(1 << 31) <= v < 1 << 31:
        raise ValueError(f"{what}: {name} must fit a C int, not {v}")
    return v


def _loff(what: str, name: str, value: Any) -> int:
    """A ``loff_t`` argument (file offset): -2**63 <= value < 2**63."""
    v = _int(what, name, value)
    if not -(1 << 63) <= v < 1 << 63:
        raise ValueError(f"{what}: {name} must fit a loff_t (64-bit signed), not {v}")
    return v


def _bytes(what: str, name: str, value: Any) -> bytes:
    """A buffer to store: bytes, bytearray or memoryview (never an int,
    which ``bytes()`` would take as a count of zero bytes)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what}: {name} must be bytes, bytearray or memoryview, "
                        f"not {type(value).__name__}")
    return value if type(value) is bytes else bytes(value)


def _str(what: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what}: {name} must be a str, not {type(value).__name__}")
    return value


def _user_addr(addr: int) -> None:
    """A user access the MMU refuses before any page table is read: the
    guard page at TASK_SIZE and the kernel half fault (SIGSEGV,
    SEGV_MAPERR); a non-canonical address is a general protection fault
    (SIGSEGV, SI_KERNEL, si_addr 0)."""
    if addr >= TASK_SIZE:
        if 1 << 47 <= addr < (1 << 64) - (1 << 47):
            raise SegmentationFault(0, SI_KERNEL)
        raise SegmentationFault_(addr)


def _oserror(ret: int, what: str) -> OSError:
    code = -ret
    return OSError(code, f"{what}: {os.strerror(code)}")


class Machine:
    """One simulated machine: physical memory, CPUs, a filesystem, processes.

    ``Machine(nr_frames=..., config=Config(...), **knobs)``; knobs are any
    name of the registry ``config.KNOBS`` (``fault_protocol="speculative"``,
    ``spf_walk="irq"``...; ``specfault knobs`` lists them) and override
    ``config``'s.  An unknown name raises :class:`~specfault.config.UnknownKnob`
    (a TypeError) naming the closest valid one."""

    def __init__(self, nr_frames: int | None = None, config: Config | None = None,
                 **knobs: Any) -> None:
        if config is not None and not isinstance(config, Config):
            raise TypeError(f"Machine(): config must be a Config, not {type(config).__name__}")
        config = config or Config()
        if nr_frames is not None:
            nr_frames = _int("Machine", "nr_frames", nr_frames)
            if nr_frames < 1:
                raise ValueError(f"Machine: nr_frames must be at least 1, not {nr_frames}")
            knobs["nr_frames"] = nr_frames
        for name in knobs:
            if name not in KNOBS:
                raise UnknownKnob(name, "Machine(): ")
        if knobs:
            config = config.with_(**knobs)
        self.config = config
        self.kernel = Kernel(config)
        self.processes: list[Process] = []
        self._kswapd_task: Task | None = None

    # -- running model code --
    def run(self, coro: Coroutine[Any, Any, T], task: Task) -> T:
        mm = task.mm
        if mm is not None and task.cpu is not None:
            mm.cpumask.add(task.cpu)                  # switch_mm()
        try:
            return direct.run(coro, task)
        finally:
            if self.kernel.rcu.callbacks:
                self.kernel.rcu.process()
            if self.kernel.kswapd_wait:
                self._kswapd()

    def _kswapd(self) -> None:
        """kswapd, woken by an allocation below the low watermark, runs its
        pass (balance_pgdat) once the woken call returns: the direct
        driver's stand-in for a kernel thread scheduled on another CPU."""
        kernel = self.kernel
        if self._kswapd_task is None:
            tid = next(kernel.tids)
            self._kswapd_task = Task(tid, "kswapd0", cpu=kernel.cpus[-1])
        direct.run(kswapd_run(kernel), self._kswapd_task)
        if kernel.rcu.callbacks:
            kernel.rcu.process()

    def khugepaged(self, pages: int = KHUGEPAGED_PAGES_TO_SCAN) -> int:
        """Run one pass of the khugepaged thread now (khugepaged_do_scan:
        up to ``pages`` pages of the registered mms scanned, PTE tables
        worth it collapsed into THPs); returns the pages scanned."""
        if isinstance(pages, bool) or not isinstance(pages, int):
            raise TypeError(f"khugepaged: pages must be an int, not {type(pages).__name__}")
        if not 0 < pages <= 1 << 30:
            raise ValueError(f"khugepaged: pages must be in 1..{1 << 30}, not {pages}")
        kernel = self.kernel
        task = Task(next(kernel.tids), "khugepaged", cpu=kernel.cpus[-1])
        return self.run(khugepaged_do_scan(kernel, pages), task)

    def _new_task(self, name: str, mm: MmStruct) -> Task:
        tid = next(self.kernel.tids)
        cpu = self.kernel.cpus[(tid - 1) % len(self.kernel.cpus)]
        return Task(tid, name, mm=mm, cpu=cpu)

    # -- processes and files --
    def spawn(self, name: str = "") -> Process:
        """A new process with an empty address space."""
        _str("spawn", "name", name)
        mm = MmStruct(self.kernel)
        self.kernel.mms.append(mm)
        proc = Process(self, mm, name)
        self.processes.append(proc)
        return proc

    def create_file(self, path: str, data: bytes = b"") -> None:
        """Create (or overwrite) a file; its pages start in the page cache.
        Overwriting truncates the old contents first, as ``open`` with
        O_TRUNC does: mappings of the file see the new contents, or SIGBUS
        beyond its new end."""
        _abs_path("create_file", path)
        data = _bytes("create_file", "data", data)
        inode = self.kernel.fs.inodes.get(path)
        if inode is not None:
            self._truncate(inode, 0, Task(0, "create_file"))
        self.kernel.fs.create(path, data)

    def _truncate(self, inode: Any, size: int, task: Task) -> None:
        """Truncate a file to ``size`` (truncate.do_truncate: shmem_setattr):
        mappings beyond the new end lose their pages, private COWed copies
        included, and a later access there is beyond end of file (SIGBUS)."""
        self.run(do_truncate(self.kernel, inode, size), task)

    # -- observation --
    def vmstat(self) -> dict[str, int]:
        """/proc/vmstat-style counters (events since boot, plus gauges)."""
        out = dict(self.kernel.vmstat)
        out["nr_free_pages"] = self.kernel.mem.nr_free()
        out["nr_anon_pages"] = sum(mm.rss["anon"] for mm in self.kernel.mms if not mm.dead)
        out["nr_file_pages"] = sum(len(i.pages) for i in self.kernel.fs.inodes.values()) \
            + sum(len(i.pages) for i in self.kernel.fs.shmem_inodes)
        for name, lst in zip(LRU_NAMES, self.kernel.mem.lru, strict=True):
            out["nr_" + name] = len(lst)
        out["nr_swapcached"] = len(self.kernel.swap_cache)
        return out

    def meminfo(self) -> dict[str, int]:
        """The swap lines of /proc/meminfo, in kB: SwapTotal, SwapFree,
        SwapCached (the pages of the swap cache)."""
        k = self.kernel
        return {"SwapTotal": total_swap_pages(k) * 4, "SwapFree": nr_swap_pages(k) * 4,
                "SwapCached": len(k.swap_cache) * 4}

    def check(self) -> None:
        """Run every structural invariant (check_mm on all live mms)."""
        from specfault.check.invariants import check_kernel
        check_kernel(self.kernel)


class _Context:
    """What a thread can do: syscalls and memory accesses, as ``task``."""

    machine: Machine
    mm: MmStruct
    task: Task
    process: Process

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.mm.dead:
            coro.close()
            raise OSError(errno.ESRCH, f"process {self.process.pid} has exited")
        return self.machine.run(coro, self.task)

    def _sys(self, coro: Coroutine[Any, Any, int], what: str) -> int:
        ret = self._run(coro)
        if ret < 0:
            raise _oserror(ret, what)
        return ret

    # -- memory syscalls --
    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        """mmap(2).  Returns the address; raises OSError(errno) like Linux."""
        addr = _ulong("mmap", "addr", addr)
        length = _ulong("mmap", "length", length)
        prot = _ulong("mmap", "prot", prot)
        flags = _ulong("mmap", "flags", flags)
        fd = _cint("mmap", "fd", fd)
        offset = _ulong("mmap", "offset", offset)
        if flags & MAP_ANONYMOUS and flags & MAP_HUGETLB:
            raise ValueError("mmap: flags: MAP_HUGETLB is not modelled (no hugetlbfs)")
        if offset & (PAGE_SIZE - 1):
            raise _oserror(-errno.EINVAL, "mmap")
        file = None
        if not flags & MAP_ANONYMOUS:
            file = self.process.files.get(fd)
            if file is None:
                raise _oserror(-errno.EBADF, "mmap")
        ret, populate = self._run(sys_mmap(self.mm, addr, length, prot, flags, file,
                                           offset >> 12))
        if ret < 0:
            raise _oserror(ret, "mmap")
        if populate:
            self._run(mm_populate(self.mm, ret, populate))
        return ret

    def munmap(self, addr: int, length: int) -> None:
        addr = _ulong("munmap", "addr", addr)
        length = _ulong("munmap", "length", length)
        self._sys(sys_munmap(self.mm, addr, length), "munmap")

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        addr = _ulong("mprotect", "addr", addr)
        length = _ulong("mprotect", "length", length)
        prot = _ulong("mprotect", "prot", prot)
        self._sys(sys_mprotect(self.mm, addr, length, prot), "mprotect")

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        old_addr = _ulong("mremap", "old_addr", old_addr)
        old_len = _ulong("mremap", "old_len", old_len)
        new_len = _ulong("mremap", "new_len", new_len)
        flags = _ulong("mremap", "flags", flags)
        new_addr = _ulong("mremap", "new_addr", new_addr)
        return self._sys(sys_mremap(self.mm, old_addr, old_len, new_len, flags, new_addr),
                         "mremap")

    def madvise(self, addr: int, length: int, advice: int) -> None:
        addr = _ulong("madvise", "addr", addr)
        length = _ulong("madvise", "length", length)
        advice = _cint("madvise", "advice", advice)
        self._sys(sys_madvise(self.mm, addr, length, advice), "madvise")

    def brk(self, addr: int) -> int:
        """brk(2) as the kernel returns it: the new break, or the old one."""
        addr = _ulong("brk", "addr", addr)
        return self._run(sys_brk(self.mm, addr))

    # -- accesses --
    def _access(self, addr: int, access: int, n: int = 0, data: bytes = b"") -> Any:
        """One access within one page: the MMU inline (no coroutine, no
        driver); when it faults, the fault-retry loop (``user_access``)
        through the direct driver, starting with that fault."""
        mm = self.mm
        if mm.dead:
            raise OSError(errno.ESRCH, f"process {self.process.pid} has exited")
        task = self.task
        saved = STATE.task
        STATE.task = task
        try:
            got = hw_access(mm, task.cpu, addr, access, n, data)
        finally:
            STATE.task = saved
        if type(got) is PageFault:       # the exception path: handle, retry
            got = self.machine.run(user_access(mm, addr, access, n, data, got), task)
        return got

    def read(self, addr: int, n: int) -> bytes:
        """Load ``n`` bytes at ``addr`` (faulting as needed)."""
        addr = _ulong("read", "addr", addr)
        n = _ulong("read", "n", n)
        out = bytearray()
        while n > 0:
            _user_addr(addr)
            take = min(n, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            out += self._access(addr, ACCESS_READ, take)
            addr += take
            n -= take
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """Store ``data`` (bytes, bytearray or memoryview) at ``addr``
        (faulting as needed)."""
        addr = _ulong("write", "addr", addr)
        data = _bytes("write", "data", data)
        if not data:
            return                  # storing nothing touches no memory
        room = PAGE_SIZE - (addr & (PAGE_SIZE - 1))
        if len(data) <= room:
            _user_addr(addr)
            self._access(addr, ACCESS_WRITE, 0, data)
            return
        done = 0
        while done < len(data):
            _user_addr(addr + done)
            take = min(len(data) - done, PAGE_SIZE - ((addr + done) & (PAGE_SIZE - 1)))
            self._access(addr + done, ACCESS_WRITE, 0, data[done:done + take])
            done += take

    def access(self, addr: int, kind: str = "read") -> None:
        """Touch one byte at ``addr``: "read", "exec", or "write" (which
        stores back the byte that is there, so contents do not change —
        the load may fault first, then the store)."""
        kind = _str("access", "kind", kind)
        if kind not in _ACCESS:
            raise ValueError(f"access: kind must be read, write or exec, not {kind!r}")
        addr = _ulong("access", "addr", addr)
        _user_addr(addr)
        if kind == "write":
            old = self._access(addr, ACCESS_READ, 1)
            self._access(addr, ACCESS_WRITE, 0, old)
        else:
            self._access(addr, _ACCESS[kind], 1)

    # -- observation --
    def maps(self) -> str:
        """/proc/PID/maps."""
        return maps(self.mm)

    def pagemap(self, addr: int) -> PagemapEntry:
        """/proc/PID/pagemap entry for the page containing ``addr``; past
        the user address space (TASK_SIZE) nothing is mapped (Linux's file
        ends there)."""
        addr = _ulong("pagemap", "addr", addr)
        if addr >= TASK_SIZE:
            return PagemapEntry(0)
        return self.machine.run(pagemap_entry(self.mm, addr & ~(PAGE_SIZE - 1)), self.task)

    def smaps(self) -> list[dict[str, Any]]:
        return self.machine.run(smaps(self.mm), self.task)


def _abs_path(what: str, path: Any) -> str:
    """A path of the model's filesystem: a str, absolute (there is no cwd)."""
    _str(what, "path", path)
    if not path.startswith("/"):
        raise ValueError(f"{what}: path must be absolute (the model has no cwd), not {path!r}")
    return str(path)


class Process(_Context):
    """A process: an mm, a file table, and its main thread."""

    def __init__(self, machine: Machine, mm: MmStruct, name: str = "") -> None:
        self.machine = machine
        self.mm = mm
        self.pid = next(machine.kernel.pids)
        self.name = name or f"p{self.pid}"
        self.process = self
        self.task = machine._new_task(f"{self.name}/main", mm)
        self.files: dict[int, OpenFile] = {}
        self.threads: list[Thread] = []

    def thread(self) -> Thread:
        """A new thread sharing this process's mm (on the next CPU)."""
        if self.mm.dead:
            raise OSError(errno.ESRCH, f"process {self.pid} has exited")
        t = Thread(self)
        self.threads.append(t)
        self.mm.mm_users += 1
        return t

    def fork(self) -> Process:
        """fork(2): a child with a COW copy of the address space."""
        if self.mm.dead:
            raise OSError(errno.ESRCH, f"process {self.pid} has exited")
        mm = self.machine.run(dup_mmap(self.mm), self.task)
        child = Process(self.machine, mm, "")
        for fd, f in self.files.items():
            f.f_count += 1
            child.files[fd] = f
        self.machine.processes.append(child)
        return child

    def exec(self, executable: ElfImage, interpreter: ElfImage | None = None, *,
             arg_pages: int = 1, rlimit_stack: int | None = 8 << 20,
             executable_stack: bool = False, vdso: VdsoImage | None = VDSO_X86_64,
             load_bias: int | None = None) -> ExecLayout:
        """execve(2) of an ELF executable, as Linux 6.18 lays it out without
        randomisation (mm/exec.py): the old address space goes (and the
        process's other threads with it), a new one gets the stack (its top
        ``arg_pages`` pages written: the arguments; ``VM_GROWSDOWN``, grown
        on faults up to ``rlimit_stack``, None: unlimited), the
        executable's and the interpreter's PT_LOAD segments (files of the
        model's filesystem, mapped private), their bss, the vDSO and vvar
        special mappings and the brk start.  Returns where each went.
        ``load_bias`` places an ET_DYN executable elsewhere than
        ELF_ET_DYN_BASE.  A segment that cannot be mapped raises OSError."""
        if not isinstance(executable, ElfImage) or not (
                interpreter is None or isinstance(interpreter, ElfImage)):
            raise TypeError("exec: executable and interpreter must be ElfImage")
        arg_pages = _int("exec", "arg_pages", arg_pages)
        if not 1 <= arg_pages <= 32 * 1024:
            raise ValueError(f"exec: arg_pages must be in 1..32768, not {arg_pages}")
        if rlimit_stack is not None:
            rlimit_stack = _ulong("exec", "rlimit_stack", rlimit_stack)
            if rlimit_stack < (arg_pages << 12):
                raise ValueError("exec: rlimit_stack is smaller than the arguments")
        if load_bias is not None:
            load_bias = _ulong("exec", "load_bias", load_bias)
        fs = self.machine.kernel.fs
        files = []
        for image in (executable, interpreter):
            if image is None:
                continue
            _abs_path("exec", image.path)
            if image.path not in fs.inodes:
                raise OSError(errno.ENOENT, f"exec: {os.strerror(errno.ENOENT)}: {image.path!r}")
            if not image.segments:
                raise ValueError(f"exec: {image.path} has no PT_LOAD segment")
            for seg in image.segments:
                if seg.filesz > seg.memsz or min(seg.vaddr, seg.filesz, seg.offset) < 0 \
                        or seg.prot & ~7 or (seg.vaddr - seg.offset) & 0xFFF:
                    raise ValueError(f"exec: {image.path}: bad PT_LOAD {seg}")
        if self.mm.dead:
            raise OSError(errno.ESRCH, f"process {self.pid} has exited")
        self.machine.run(exit_mmap(self.mm), self.task)
        kernel = self.machine.kernel
        mm = MmStruct(kernel)
        kernel.mms.append(mm)
        self.mm = mm
        self.task.mm = mm
        self.threads = []                       # de_thread(): the others are gone
        for image in (executable, interpreter):
            files.append(None if image is None else OpenFile(fs.inodes[image.path], FMODE_READ))
        try:
            return self.machine.run(load_elf_binary(
                mm, executable, files[0], interpreter, files[-1] if interpreter else None,
                arg_pages=arg_pages, rlimit_stack=rlimit_stack, executable_stack=executable_stack,
                vdso=vdso, load_bias=load_bias), self.task)
        except ExecError as exc:
            raise OSError(-exc.err, str(exc)) from None
        finally:
            for f in files:
                if f is not None:
                    fs.fput(f)

    def exit(self) -> None:
        """exit(2): tear down the address space, close every fd."""
        if self.mm.dead:
            return
        self.machine.run(exit_mmap(self.mm), self.task)
        for fd in list(self.files):
            self.close(fd)

    # -- files --
    def open(self, path: str, flags: int = O_RDONLY) -> int:
        """open(2) of a file of the model's filesystem.  Flags: O_RDONLY,
        O_WRONLY, O_RDWR (or 3: an fd that can neither read nor write),
        O_CREAT, O_EXCL, O_TRUNC (truncates whatever the access mode, and
        unmaps the file's pages everywhere); O_CLOEXEC, O_NONBLOCK, O_SYNC,
        O_DSYNC, O_NOCTTY, O_NOFOLLOW, O_NOATIME and O_LARGEFILE change
        nothing the model shows; any other flag is refused."""
        _abs_path("open", path)
        flags = _cint("open", "flags", flags)
        for bit, name in _O_NOT_MODELLED.items():
            if flags & bit == bit:
                raise ValueError(f"open: flags: {name} is not modelled")
        unknown = flags & ~(_O_MODELLED | _O_NO_EFFECT)
        if unknown:
            raise ValueError(f"open: flags: unknown or unmodelled bits {unknown:#o}")
        fs = self.machine.kernel.fs
        inode = fs.inodes.get(path)
        if inode is None:
            if not flags & O_CREAT:
                raise OSError(errno.ENOENT, f"open: {os.strerror(errno.ENOENT)}: {path!r}")
            inode = fs.create(path)
        elif flags & O_CREAT and flags & O_EXCL:
            raise OSError(errno.EEXIST, f"open: {os.strerror(errno.EEXIST)}: {path!r}")
        elif flags & O_TRUNC:
            self.machine._truncate(inode, 0, self.task)      # handle_truncate()
        # OPEN_FMODE(): O_RDONLY -> read, O_WRONLY -> write, O_RDWR -> both, 3 -> neither
        mode = {O_RDONLY: FMODE_READ, O_WRONLY: FMODE_WRITE, O_RDWR: FMODE_READ | FMODE_WRITE,
                O_ACCMODE: 0}[flags & O_ACCMODE]
        fd = 3
        while fd in self.files:
            fd += 1
        self.files[fd] = OpenFile(inode, mode)
        return fd

    def close(self, fd: int) -> None:
        fd = _cint("close", "fd", fd)
        f = self.files.pop(fd, None)
        if f is None:
            raise OSError(errno.EBADF, f"close: {os.strerror(errno.EBADF)}")
        self.machine.kernel.fs.fput(f)

    def _file(self, fd: int, mode: int, what: str) -> OpenFile:
        f = self.files.get(fd)
        if f is None or not f.f_mode & mode:
            raise OSError(errno.EBADF, f"{what}: {os.strerror(errno.EBADF)}")
        return f

    def _rw_check(self, what: str, fd: int, mode: int, count: int, offset: int) -> OpenFile:
        """ksys_pread64/ksys_pwrite64 + rw_verify_area(), in Linux's order:
        a negative offset is EINVAL, then the fd (EBADF), then a count or
        an end that does not fit a loff_t (EINVAL)."""
        if offset < 0:
            raise OSError(errno.EINVAL, f"{what}: {os.strerror(errno.EINVAL)} (offset < 0)")
        f = self._file(fd, mode, what)
        if count >= 1 << 63 or offset + count >= 1 << 63:
            raise OSError(errno.EINVAL, f"{what}: {os.strerror(errno.EINVAL)} (offset + count)")
        return f

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        fd = _cint("pread", "fd", fd)
        n = _ulong("pread", "n", n)
        offset = _loff("pread", "offset", offset)
        f = self._rw_check("pread", fd, FMODE_READ, n, offset)
        return self.machine.kernel.fs.read(f.inode, offset, min(n, MAX_RW_COUNT))

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        fd = _cint("pwrite", "fd", fd)
        data = _bytes("pwrite", "data", data)
        offset = _loff("pwrite", "offset", offset)
        f = self._rw_check("pwrite", fd, FMODE_WRITE, len(data), offset)
        if not data:
            return 0                         # nothing written, the size unchanged
        ret = self.machine.kernel.fs.write(f.inode, offset, data[:MAX_RW_COUNT])
        if ret < 0:
            raise _oserror(ret, "pwrite")
        return ret

    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2) (do_sys_ftruncate, then shmem_setattr): in Linux's
        order, a negative length is EINVAL, then a bad fd EBADF, then an fd
        not open for writing EINVAL.  Shrinking unmaps the pages beyond the
        new end from every mapping (private COWed copies too: an access
        there is SIGBUS) and zeroes the rest of the last page; growing only
        sets the size."""
        fd = _cint("ftruncate", "fd", fd)
        length = _loff("ftruncate", "length", length)
        if length < 0:
            raise OSError(errno.EINVAL, f"ftruncate: {os.strerror(errno.EINVAL)} (length < 0)")
        f = self.files.get(fd)
        if f is None:
            raise OSError(errno.EBADF, f"ftruncate: {os.strerror(errno.EBADF)}")
        if not f.f_mode & FMODE_WRITE:
            raise OSError(errno.EINVAL, f"ftruncate: {os.strerror(errno.EINVAL)} (not open for writing)")
        self.machine._truncate(f.inode, length, self.task)

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2) on a tmpfs file (vfs_fallocate, then
        shmem_fallocate), errors in Linux's order: a bad fd EBADF; a
        negative offset or a length <= 0 EINVAL; a mode vfs_fallocate does
        not know, or PUNCH_HOLE without KEEP_SIZE, EOPNOTSUPP; an fd not open
        for writing EBADF; an end past 2**63-1 EFBIG; a mode tmpfs does not
        do (ZERO_RANGE, COLLAPSE_RANGE, ...) EOPNOTSUPP.
        ``FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`` punches a hole
        (truncate.shmem_punch_hole: whole pages unmapped and dropped, private
        COWed copies kept, partial pages zeroed); mode 0 / KEEP_SIZE
        allocates — in the model only the size grows (without KEEP_SIZE):
        tmpfs's preallocated pages are not uptodate, so no fault-around maps
        them, and nothing user space sees in the model tells them apart."""
        fd = _cint("fallocate", "fd", fd)
        mode = _cint("fallocate", "mode", mode)
        offset = _loff("fallocate", "offset", offset)
        length = _loff("fallocate", "length", length)
        f = self.files.get(fd)
        if f is None:
            raise OSError(errno.EBADF, f"fallocate: {os.strerror(errno.EBADF)}")
        if offset < 0 or length <= 0:
            raise OSError(errno.EINVAL, f"fallocate: {os.strerror(errno.EINVAL)}")
        kind = mode & FALLOC_FL_MODE_MASK
        if mode & ~(FALLOC_FL_MODE_MASK | FALLOC_FL_KEEP_SIZE) or kind & (kind - 1) \
                or (kind == FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE) \
                or (kind in (FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE)
                    and mode & FALLOC_FL_KEEP_SIZE):
            raise OSError(errno.EOPNOTSUPP, f"fallocate: {os.strerror(errno.EOPNOTSUPP)}")
        if not f.f_mode & FMODE_WRITE:
            raise OSError(errno.EBADF, f"fallocate: {os.strerror(errno.EBADF)}")
        if offset + length > MAX_LFS_FILESIZE:
            raise OSError(errno.EFBIG, f"fallocate: {os.strerror(errno.EFBIG)}")
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            raise OSError(errno.EOPNOTSUPP, f"fallocate: {os.strerror(errno.EOPNOTSUPP)} (tmpfs)")
        inode = f.inode
        if mode & FALLOC_FL_PUNCH_HOLE:
            self._run(shmem_punch_hole(self.machine.kernel, inode, offset, length))
        elif not mode & FALLOC_FL_KEEP_SIZE and offset + length > inode.size:
            inode.size = offset + length                   # i_size_write()

    def __repr__(self) -> str:
        return f"<Process {self.pid}{' (exited)' if self.mm.dead else ''}>"


class Thread(_Context):
    """Another thread of a process: same mm, its own task and CPU."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.machine = process.machine
        self.mm = process.mm
        self.task = self.machine._new_task(f"{process.name}/t{len(process.threads) + 1}",
                                           process.mm)

    def __repr__(self) -> str:
        return f"<Thread {self.task.name}>"
