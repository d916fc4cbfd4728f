"""The synchronous facade users meet first: Machine, Process, Thread.

Each call runs the model's async code to completion with the direct driver
(ops performed inline), then lets RCU callbacks run — between top-level
calls nobody is inside a read-side section.  Errors come back as Linux
would give them: ``OSError`` with the errno, ``SegmentationFault`` /
``BusError`` for a bad access.

    >>> import specfault as sf
    >>> m = sf.Machine()
    >>> p = m.spawn()
    >>> a = p.mmap(0, 8192, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    >>> p.write(a, b"hi"); p.read(a, 2)
    b'hi'
"""

from __future__ import annotations

import errno
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from specfault.config import KNOBS, Config, UnknownKnob
from specfault.constants import (
    MAP_ANONYMOUS,
    O_ACCMODE,
    O_CREAT,
    O_EXCL,
    O_RDONLY,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    PAGE_SIZE,
    SEGV_MAPERR,
)
from specfault.errors import SegmentationFault
from specfault.mm.access import PageFault, hw_access, user_access
from specfault.mm.fault import ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE
from specfault.mm.filemap import FMODE_READ, FMODE_WRITE, OpenFile
from specfault.mm.fork import dup_mmap, exit_mmap
from specfault.mm.gup import mm_populate
from specfault.mm.kernel import Kernel
from specfault.mm.madvise import sys_madvise
from specfault.mm.mm_struct import MmStruct
from specfault.mm.mmap import sys_brk, sys_mmap, sys_munmap
from specfault.mm.mprotect import sys_mprotect
from specfault.mm.mremap import sys_mremap
from specfault.mm.proc import PagemapEntry, maps, pagemap_entry, smaps
from specfault.runtime import STATE, Task, direct

T = TypeVar("T")
_ACCESS = {"read": ACCESS_READ, "write": ACCESS_WRITE, "exec": ACCESS_EXEC}


def SegmentationFault_(addr: int) -> SegmentationFault:  # noqa: N802
    return SegmentationFault(addr, SEGV_MAPERR)


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
            knobs["nr_frames"] = nr_frames
        for name in knobs:
            if name not in KNOBS:
                raise UnknownKnob(name, "Machine(): ")
        if knobs:
            config = config.with_(**knobs)
        self.config = config
        self.kernel = Kernel(config)
        self.processes: list[Process] = []

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

    def _new_task(self, name: str, mm: MmStruct) -> Task:
        tid = next(self.kernel.tids)
        cpu = self.kernel.cpus[(tid - 1) % len(self.kernel.cpus)]
        return Task(tid, name, mm=mm, cpu=cpu)

    # -- processes and files --
    def spawn(self, name: str = "") -> Process:
        """A new process with an empty address space."""
        mm = MmStruct(self.kernel)
        self.kernel.mms.append(mm)
        proc = Process(self, mm, name)
        self.processes.append(proc)
        return proc

    def create_file(self, path: str, data: bytes = b"") -> None:
        """Create (or overwrite) a file; its pages start in the page cache."""
        if not path.startswith("/"):
            raise OSError(errno.EINVAL, f"create_file: path must be absolute: {path!r}")
        self.kernel.fs.create(path, bytes(data))

    # -- observation --
    def vmstat(self) -> dict[str, int]:
        """/proc/vmstat-style counters (events since boot, plus gauges)."""
        out = dict(self.kernel.vmstat)
        out["nr_free_pages"] = self.kernel.mem.nr_free()
        out["nr_anon_pages"] = sum(mm.rss["anon"] for mm in self.kernel.mms if not mm.dead)
        out["nr_file_pages"] = sum(len(i.pages) for i in self.kernel.fs.inodes.values()) \
            + sum(len(i.pages) for i in self.kernel.fs.shmem_inodes)
        return out

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
        _check_args("mmap", addr=addr, length=length, prot=prot, flags=flags, offset=offset)
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
        _check_args("munmap", addr=addr, length=length)
        self._sys(sys_munmap(self.mm, addr, length), "munmap")

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        _check_args("mprotect", addr=addr, length=length, prot=prot)
        self._sys(sys_mprotect(self.mm, addr, length, prot), "mprotect")

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        _check_args("mremap", old_addr=old_addr, old_len=old_len, new_len=new_len, flags=flags,
                    new_addr=new_addr)
        return self._sys(sys_mremap(self.mm, old_addr, old_len, new_len, flags, new_addr),
                         "mremap")

    def madvise(self, addr: int, length: int, advice: int) -> None:
        _check_args("madvise", addr=addr, length=length, advice=advice)
        self._sys(sys_madvise(self.mm, addr, length, advice), "madvise")

    def brk(self, addr: int) -> int:
        """brk(2) as the kernel returns it: the new break, or the old one."""
        _check_args("brk", addr=addr)
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
        _check_addr("read", addr)
        if type(n) is not int or n < 0:
            raise TypeError(f"read: n must be a non-negative int, not {n!r}")
        out = bytearray()
        while n > 0:
            take = min(n, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            out += self._access(addr, ACCESS_READ, take)
            addr += take
            n -= take
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """Store ``data`` at ``addr`` (faulting as needed)."""
        _check_addr("write", addr)
        if type(data) is not bytes:
            data = bytes(data)
        room = PAGE_SIZE - (addr & (PAGE_SIZE - 1))
        if len(data) <= room:
            self._access(addr, ACCESS_WRITE, 0, data)
            return
        done = 0
        while done < len(data):
            take = min(len(data) - done, PAGE_SIZE - ((addr + done) & (PAGE_SIZE - 1)))
            self._access(addr + done, ACCESS_WRITE, 0, data[done:done + take])
            done += take

    def access(self, addr: int, kind: str = "read") -> None:
        """Touch one byte at ``addr``: "read", "exec", or "write" (which
        stores back the byte that is there, so contents do not change —
        the load may fault first, then the store)."""
        if kind not in _ACCESS:
            raise ValueError(f"access: kind must be read, write or exec, not {kind!r}")
        _check_addr("access", addr)
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
        """/proc/PID/pagemap entry for the page containing ``addr``."""
        return self.machine.run(pagemap_entry(self.mm, addr & ~(PAGE_SIZE - 1)), self.task)

    def smaps(self) -> list[dict[str, Any]]:
        return self.machine.run(smaps(self.mm), self.task)


def _check_addr(what: str, addr: int) -> None:
    if type(addr) is not int:
        raise TypeError(f"{what}: addr must be an int, not {type(addr).__name__}")
    if not 0 <= addr < 1 << 64:
        raise SegmentationFault_(addr)


def _check_args(what: str, **args: Any) -> None:
    for name, value in args.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{what}: {name} must be an int, not {type(value).__name__}")
        if value < 0 and name not in ("fd",):
            raise _oserror(-errno.EINVAL, f"{what} ({name} < 0)")
        if value >= 1 << 64:
            raise _oserror(-errno.EINVAL, f"{what} ({name} too large)")


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

    def exit(self) -> None:
        """exit(2): tear down the address space, close every fd."""
        if self.mm.dead:
            return
        self.machine.run(exit_mmap(self.mm), self.task)
        for fd in list(self.files):
            self.close(fd)

    # -- files --
    def open(self, path: str, flags: int = O_RDONLY) -> int:
        fs = self.machine.kernel.fs
        inode = fs.inodes.get(path)
        if inode is None:
            if not flags & O_CREAT:
                raise OSError(errno.ENOENT, f"open: {os.strerror(errno.ENOENT)}: {path!r}")
            inode = fs.create(path)
        elif flags & O_CREAT and flags & O_EXCL:
            raise OSError(errno.EEXIST, f"open: {os.strerror(errno.EEXIST)}: {path!r}")
        acc = flags & O_ACCMODE
        if acc not in (O_RDONLY, O_WRONLY, O_RDWR):
            raise OSError(errno.EINVAL, "open: bad access mode")
        mode = {O_RDONLY: FMODE_READ, O_WRONLY: FMODE_WRITE, O_RDWR: FMODE_READ | FMODE_WRITE}[acc]
        if flags & O_TRUNC and mode & FMODE_WRITE and inode.size:
            if any(p.mapcount for p in inode.pages.values()):
                raise OSError(errno.EBUSY, "open: O_TRUNC of a mapped file is not modelled")
            fs.truncate(inode, 0)
        fd = 3
        while fd in self.files:
            fd += 1
        self.files[fd] = OpenFile(inode, mode)
        return fd

    def close(self, fd: int) -> None:
        f = self.files.pop(fd, None)
        if f is None:
            raise OSError(errno.EBADF, f"close: {os.strerror(errno.EBADF)}")
        self.machine.kernel.fs.fput(f)

    def _file(self, fd: int, mode: int, what: str) -> OpenFile:
        f = self.files.get(fd)
        if f is None or not f.f_mode & mode:
            raise OSError(errno.EBADF, f"{what}: {os.strerror(errno.EBADF)}")
        return f

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        f = self._file(fd, FMODE_READ, "pread")
        return self.machine.kernel.fs.read(f.inode, offset, n)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        f = self._file(fd, FMODE_WRITE, "pwrite")
        ret = self.machine.kernel.fs.write(f.inode, offset, bytes(data))
        if ret < 0:
            raise _oserror(ret, "pwrite")
        return ret

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
