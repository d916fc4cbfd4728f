"""Run the recorded command: address-space randomisation off, under ptrace.

perf records what the kernel did; ptrace adds the two things perf cannot
see:

* the exact flags of every ``clone``/``clone3``/``fork``/``vfork`` (a
  ``clone3`` tracepoint shows only a pointer to its arguments): read from
  the parent's registers and memory at its ``PTRACE_EVENT_CLONE`` stop, so
  the replay knows which tasks share an address space (``CLONE_VM``);
* each address space as it ends: at the ``PTRACE_EVENT_EXIT`` stop of the
  last task using it (the mm is still whole), ``/proc/TID/maps``, the
  ``VmFlags`` of ``smaps`` and the present pages of ``pagemap`` — the
  final layout the replay compares with.

The child turns randomisation off with ``personality(ADDR_NO_RANDOMIZE)``
(what ``setarch -R`` does) and execs the command; its first exec is the
start of the trace.  Signals the tracee receives are passed on unchanged.
Timestamps are CLOCK_MONOTONIC, the clock perf records with (``-k mono``).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.personality.restype = ctypes.c_int
_libc.personality.argtypes = [ctypes.c_ulong]

PTRACE_TRACEME, PTRACE_PEEKDATA, PTRACE_CONT, PTRACE_GETREGS = 0, 2, 7, 12
PTRACE_SETOPTIONS, PTRACE_GETEVENTMSG = 0x4200, 0x4201
PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE = 1, 2, 3
PTRACE_EVENT_EXEC, PTRACE_EVENT_EXIT = 4, 6
PTRACE_O_TRACEFORK, PTRACE_O_TRACEVFORK, PTRACE_O_TRACECLONE = 0x2, 0x4, 0x8
PTRACE_O_TRACEEXEC, PTRACE_O_TRACEEXIT, PTRACE_O_EXITKILL = 0x10, 0x40, 0x100000
ADDR_NO_RANDOMIZE = 0x0040000
WALL = 0x40000000
CLONE_VM, CLONE_VFORK = 0x100, 0x4000
# x86-64 syscall numbers
NR_CLONE, NR_FORK, NR_VFORK, NR_CLONE3 = 56, 57, 58, 435


class UserRegs(ctypes.Structure):
    """struct user_regs_struct (x86-64)."""

    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
        "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
        "es", "fs", "gs")]


@dataclass
class Final:
    """An address space at the exit of its last task."""

    pid: int
    tid: int
    t: int                                   # CLOCK_MONOTONIC ns
    maps: list[str]
    vmflags: list[str]
    present: list[list[int]]                 # [first page address, number of pages] runs


@dataclass
class Launched:
    pid: int = 0
    status: int | None = None                # exit code, or -signal
    traced: bool = False                     # ptrace worked
    why_untraced: str = ""
    clones: dict[int, dict[str, Any]] = field(default_factory=dict)   # child tid -> flags...
    finals: list[Final] = field(default_factory=list)
    interrupted: bool = False


def monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _ptrace(req: int, tid: int, addr: int = 0, data: int = 0) -> int:
    ctypes.set_errno(0)
    ret = _libc.ptrace(req, tid, ctypes.c_void_p(addr), ctypes.c_void_p(data))
    if ret == -1 and ctypes.get_errno():
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _eventmsg(tid: int) -> int:
    msg = ctypes.c_ulong()
    ctypes.set_errno(0)
    if _libc.ptrace(PTRACE_GETEVENTMSG, tid, None, ctypes.byref(msg)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(msg.value)


def _clone_flags(tid: int, event: int) -> tuple[int, str]:
    """The flags of the clone the stopped ``tid`` is in, and its syscall."""
    regs = UserRegs()
    ctypes.set_errno(0)
    if _libc.ptrace(PTRACE_GETREGS, tid, None, ctypes.byref(regs)) == -1:
        return -1, "?"
    nr = regs.orig_rax
    if nr == NR_CLONE:
        return int(regs.rdi), "clone"
    if nr == NR_CLONE3:
        ctypes.set_errno(0)
        word = _libc.ptrace(PTRACE_PEEKDATA, tid, ctypes.c_void_p(regs.rdi), None)
        if word == -1 and ctypes.get_errno():
            return -1, "clone3"
        return int(word) & ((1 << 64) - 1), "clone3"
    if nr == NR_VFORK or event == PTRACE_EVENT_VFORK:
        return CLONE_VM | CLONE_VFORK | signal.SIGCHLD, "vfork"
    if nr == NR_FORK:
        return int(signal.SIGCHLD), "fork"
    return -1, "?"


_SMAPS_HEAD = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def snapshot(pid: int, tid: int) -> Final:
    """/proc/TID/{maps,smaps,pagemap} of a stopped task."""
    t = monotonic_ns()
    base = f"/proc/{tid}"
    with open(f"{base}/maps") as f:
        maps = f.read().splitlines()
    vmflags: list[str] = []
    with open(f"{base}/smaps") as f:
        for line in f:
            if line.startswith("VmFlags:"):
                vmflags.append(line[8:].strip())
    present: list[list[int]] = []
    top_bit = bytes(0x80 if b & 0x80 else 0 for b in range(256))
    with open(f"{base}/pagemap", "rb", buffering=0) as pm:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo >= 1 << 47:
                continue                      # [vsyscall]: not in the mm
            step = 1 << 16                    # pages per read
            for first in range(lo >> 12, hi >> 12, step):
                n = min(step, (hi >> 12) - first)
                pm.seek(first * 8)
                data = pm.read(n * 8)
                flags = data[7::8].translate(top_bit)
                for m in re.finditer(rb"\x80+", flags):
                    addr = (first + m.start()) << 12
                    npages = m.end() - m.start()
                    if present and present[-1][0] + (present[-1][1] << 12) == addr:
                        present[-1][1] += npages
                    else:
                        present.append([addr, npages])
    return Final(pid, tid, t, maps, vmflags, present)


def launch(argv: list[str], path: str, ready: Callable[[int], None],
           stdout_to_stderr: bool = False) -> Launched:
    """Run ``argv`` (``path`` resolved) with randomisation off, under ptrace
    when it can be had.  ``ready(pid)`` is called while the child is
    stopped before its exec (to attach perf).  Returns when every task of
    the child's tree has exited.  Ctrl-C reaches the child as it would
    without us; the result is then marked interrupted.  ``stdout_to_stderr``:
    the command writes its output on our stderr (our stdout is for JSON)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # the child
        try:
            os.close(r)
            if stdout_to_stderr:
                os.dup2(2, 1)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            ctypes.set_errno(0)
            ok = _libc.ptrace(PTRACE_TRACEME, 0, None, None) == 0
            os.write(w, b"1" if ok else b"%d" % ctypes.get_errno())
            os.close(w)
            os.kill(os.getpid(), signal.SIGSTOP)
            _libc.personality(_libc.personality(0xFFFFFFFF) | ADDR_NO_RANDOMIZE)
            os.execv(path, argv)
        except BaseException as exc:                       # noqa: BLE001 - report, then die
            os.write(2, f"specfault trace record: cannot run {argv[0]}: {exc}\n".encode())
        os._exit(127)
    os.close(w)
    res = Launched(pid)
    said = os.read(r, 16)
    os.close(r)
    _, st = os.waitpid(pid, WALL | os.WUNTRACED)
    if not os.WIFSTOPPED(st):
        res.status = os.waitstatus_to_exitcode(st)
        return res
    res.traced = said == b"1"
    if res.traced:
        try:
            _ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK
                    | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEEXIT
                    | PTRACE_O_EXITKILL)
        except OSError as exc:
            res.traced = False
            res.why_untraced = f"PTRACE_SETOPTIONS: {exc.strerror}"
    else:
        res.why_untraced = f"PTRACE_TRACEME: {os.strerror(int(said or b'1'))}"
    try:
        ready(pid)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, WALL)
        raise
    if res.traced:
        # Ctrl-C reaches the tracee (it stops, we pass it on); here it only
        # sets a flag: a KeyboardInterrupt raised between waitpid()
        # returning and its result being used would lose a stop, and leave
        # a tracee stopped for ever
        def on_sigint(signum: int, frame: Any) -> None:
            res.interrupted = True
        try:
            old = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:                             # not the main thread
            old = None
        try:
            _ptrace(PTRACE_CONT, pid)
            _follow(res)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
    else:
        os.kill(pid, signal.SIGCONT)
        while True:
            try:
                _, st = os.waitpid(pid, 0)
                break
            except KeyboardInterrupt:
                res.interrupted = True
        res.status = os.waitstatus_to_exitcode(st)
    return res


def _follow(res: Launched) -> None:
    """The ptrace loop: every task of the tree, until the last one exits."""
    pid = res.pid
    live = {pid}
    mm_of = {pid: pid}                        # tid -> address-space id
    tgid_of = {pid: pid}
    users = {pid: 1}                          # address-space id -> live tasks
    held: set[int] = set()                    # new tasks stopped before their clone event
    expected: set[int] = set()                # cloned tasks whose first stop is to come
    next_mm = -1
    while live or held:
        try:
            tid, st = os.waitpid(-1, WALL)
        except ChildProcessError:
            break
        if os.WIFEXITED(st) or os.WIFSIGNALED(st):
            live.discard(tid)
            if tid == pid:
                res.status = os.waitstatus_to_exitcode(st)
            continue
        if not os.WIFSTOPPED(st):
            continue
        sig, event = os.WSTOPSIG(st), (st >> 16) & 0xFF
        inject = 0
        try:
            if event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
                child = _eventmsg(tid)
                flags, how = _clone_flags(tid, event)
                res.clones[child] = {"flags": flags, "syscall": how, "parent": tid}
                if flags >= 0 and flags & CLONE_VM:
                    mm_of[child] = mm_of[tid]
                else:
                    mm_of[child] = child
                tgid_of[child] = tgid_of[tid] if flags >= 0 and flags & 0x10000 else child
                users[mm_of[child]] = users.get(mm_of[child], 0) + 1
                live.add(child)
                if child in held:
                    held.discard(child)
                    _ptrace(PTRACE_CONT, child)
                else:
                    expected.add(child)
            elif event == PTRACE_EVENT_EXEC:
                former = _eventmsg(tid)
                for t in {former, tid}:
                    old = mm_of.pop(t, None)
                    if old is not None:
                        users[old] -= 1
                live.discard(former)
                live.add(tid)
                mm_of[tid] = next_mm
                tgid_of[tid] = tid
                users[next_mm] = 1
                next_mm -= 1
            elif event == PTRACE_EVENT_EXIT:
                mm = mm_of.get(tid)
                if mm is not None:
                    users[mm] -= 1
                    if users[mm] == 0:
                        try:
                            res.finals.append(snapshot(tgid_of.get(tid, tid), tid))
                        except OSError:
                            pass
                    mm_of.pop(tid, None)
            elif event == 0:
                if sig == signal.SIGSTOP and tid in expected:
                    expected.discard(tid)              # a new task's first stop
                elif sig == signal.SIGSTOP and tid not in live:
                    held.add(tid)                      # before its parent's clone event
                    continue
                else:
                    inject = sig
            _ptrace(PTRACE_CONT, tid, 0, inject)
        except OSError:
            continue                                   # the task died under us (SIGKILL)
