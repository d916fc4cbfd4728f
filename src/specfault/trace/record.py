"""``specfault trace record``: run a command on the host under perf, and turn
what perf saw into a trace (format.py, docs/traces.md).

1. :func:`record` starts the command stopped (tracer.py: ptrace, ASLR off),
   attaches ``perf record`` to it with every tracepoint of perf.py, enables
   perf, lets the command run to its end, stops perf;
2. ``perf script`` prints what was recorded; perf.py parses it;
3. :class:`Converter` pairs each syscall's entry and exit, gives each the
   mappings perf reported while it ran (perf's MMAP2: the VMA after an
   mmap, each VMA an mprotect changed, a stack that grew), follows the fd
   table (openat, dup, close, exec's close-on-exec) so that each mmap and
   ftruncate names its file even when it failed, ties each SIGSEGV/SIGBUS
   to the fault that raised it, and keeps everything from the command's
   exec on, with times relative to it;
4. each mapped file is stat'ed for its size (if it still exists and is the
   same inode); nothing of its contents is read.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from specfault.trace import format as fmt
from specfault.trace.perf import PerfSetup, Raw, check_perf, parse_script, record_command, script_command
from specfault.trace.tracer import Final, Launched, launch

MAP_ANONYMOUS = 0x20
O_CLOEXEC = 0o2000000
CLONE_FILES = 0x400
SIGBUS, SIGSEGV = 7, 11
TASK_SIZE = (1 << 47) - 4096
F_DUPFD, F_SETFD, F_DUPFD_CLOEXEC = 0, 2, 1030
CLOSE_RANGE_CLOEXEC = 4

#: the syscalls whose events the trace keeps (with the CPU time before them)
_TIMED = frozenset(fmt.MEMORY_SYSCALLS) | {"ftruncate", "shmget", "clone", "clone3", "fork",
                                           "vfork"}

#: names perf gives anonymous mappings that are not files
_ANON_NAMES = ("//anon", "[heap]", "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]",
               "[uprobes]")


class RecordError(Exception):
    """Recording failed (perf died, the command could not run...)."""


# ------------------------------------------------------------------- fd table
class _Inst:
    """An open file description: its access mode (O_ACCMODE, None when it
    was opened before the trace began) and the file it turned out to be."""

    __slots__ = ("mode", "file", "id")
    _ids = 0

    def __init__(self, mode: int | None) -> None:
        self.mode = mode
        self.file: int | None = None
        _Inst._ids += 1
        self.id = _Inst._ids                  # the open file description's identity


class _FdTable:
    __slots__ = ("fds",)

    def __init__(self, fds: dict[int, tuple[_Inst, bool]] | None = None) -> None:
        self.fds: dict[int, tuple[_Inst, bool]] = dict(fds or {})    # fd -> (inst, cloexec)

    def get(self, fd: int) -> _Inst:
        got = self.fds.get(fd)
        if got is None:
            inst = _Inst(None)                # inherited, or made by a call we do not follow
            self.fds[fd] = (inst, False)
            return inst
        return got[0]


def _s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


# ------------------------------------------------------------------ converter
class Converter:
    """perf's records -> a :class:`~specfault.trace.format.Trace`."""

    def __init__(self, launched: Launched) -> None:
        self.launched = launched
        self.root = launched.pid
        self.t0: int | None = None
        self.events: list[dict[str, Any]] = []
        self.files: dict[tuple[str, Any], dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.pending: dict[int, dict[str, Any]] = {}        # tid -> syscall in flight
        self.exec_win: dict[int, dict[str, Any]] = {}       # tid -> execve in flight
        self.last: dict[int, dict[str, Any]] = {}           # tid -> its last event
        self.fdt: dict[int, _FdTable] = {}
        self.child_pid: dict[int, int] = {}                 # from PERF_RECORD_FORK
        self.lost = 0
        self.dropped: dict[str, int] = {}
        self.seq = 0
        # tid -> [state, since, run, wait]: the task's CPU time since its last
        # event (state "on": running; "off": blocked; "pre": preempted or
        # not yet run, which the simulator models itself), from the switch
        # records
        self.cpu: dict[int, list[Any]] = {}

    # -- helpers --
    def _drop(self, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1

    def file_id(self, dev: str, ino: int, name: str) -> int:
        key = (dev, ino) if ino else ("name", name)
        got = self.files.get(key)
        if got is None:
            got = {"id": len(self.files), "name": name, "dev": dev, "ino": ino}
            self.files[key] = got
        return int(got["id"])

    def map_record(self, rec: tuple[Any, ...]) -> list[Any]:
        start, end, perm, pgoff, dev, ino, name = rec
        if name in _ANON_NAMES or (dev.startswith("00:") and ino == 0):
            return [start, end, perm, 0 if name == "//anon" else pgoff, -1,
                    "" if name == "//anon" else name]
        if name == "/dev/zero (deleted)" and dev == "00:01":
            return [start, end, perm, pgoff, -1, name]       # MAP_SHARED|MAP_ANONYMOUS
        return [start, end, perm, pgoff, self.file_id(dev, ino, name), ""]

    def take(self, tid: int, t: int) -> tuple[int, int]:
        """(ns on a CPU, ns blocked) of ``tid`` since its last event, up to
        ``t``; the count starts again from ``t``."""
        st = self.cpu.get(tid)
        if st is None:
            return 0, 0
        self._account(st, t)
        run, wait = st[2], st[3]
        st[2] = st[3] = 0
        return run, wait

    @staticmethod
    def _account(st: list[Any], t: int) -> None:
        dt = max(0, t - st[1])
        if st[0] == "on":
            st[2] += dt
        elif st[0] == "off":
            st[3] += dt
        st[1] = max(st[1], t)

    def on_SWITCH(self, r: Raw) -> None:  # noqa: N802 - perf's record name
        st = self.cpu.get(r.tid)
        if st is None:
            return
        self._account(st, r.t)
        st[0] = {"in": "on", "out": "off", "preempt": "pre"}[r.data]

    def emit(self, ev: dict[str, Any], rw: tuple[int, int] | None = None) -> dict[str, Any]:
        """Add ``ev`` (absolute time ``t``) with the CPU time its task spent
        since its previous event (``rw``, else counted up to ``t``)."""
        assert self.t0 is not None
        run, wait = rw if rw is not None else self.take(ev["tid"], ev["t"])
        if run:
            ev["run"] = run
        if wait:
            ev["wait"] = wait
        ev["t"] -= self.t0
        self.seq += 1
        ev["_seq"] = self.seq
        self.events.append(ev)
        self.last[ev["tid"]] = ev
        return ev

    def task(self, tid: int, pid: int, comm: str | None = None) -> None:
        got = self.tasks.get(tid)
        if got is None:
            self.tasks[tid] = {"tid": tid, "pid": pid, "comm": comm or ""}
        elif comm:
            got["comm"] = comm

    def table(self, tid: int) -> _FdTable:
        t = self.fdt.get(tid)
        if t is None:
            t = self.fdt[tid] = _FdTable()
        return t

    # -- the records --
    def feed(self, raws: Iterable[Raw]) -> None:
        for r in raws:
            self.one(r)

    def one(self, r: Raw) -> None:
        kind = r.kind
        if kind == "LOST":
            self.lost += r.data
            return
        if self.t0 is None:
            self._before_exec(r)
            return
        if r.tid not in self.tasks:
            if kind in ("FORK", "COMM", "EXIT"):
                if kind == "FORK":
                    self.child_pid[r.tid] = r.pid
                return
            self._drop("events of unknown tasks")
            return
        handler = getattr(self, "on_" + kind, None)
        if handler is None:
            if kind.startswith("sys_enter_"):
                self.on_enter(r, kind[10:])
            elif kind.startswith("sys_exit_"):
                self.on_exit(r, kind[9:])
            return
        handler(r)

    def _before_exec(self, r: Raw) -> None:
        """Until the command's exec: only its execve window matters."""
        if r.tid != self.root:
            return
        if r.kind in ("sys_enter_execve", "sys_enter_execveat"):
            self.exec_win[r.tid] = {"maps": [], "kfaults": []}
        elif r.kind == "MMAP2" and r.tid in self.exec_win:
            self.exec_win[r.tid]["maps"].append(r)
        elif r.kind == "page_fault_kernel" and r.tid in self.exec_win:
            self.exec_win[r.tid]["kfaults"].append(r)
        elif r.kind == "sched_process_exec":
            self.t0 = r.t
            self.cpu[r.tid] = ["on", r.t, 0, 0]
            self.task(r.tid, r.pid, os.path.basename(r.data[0]))
            self.fdt[r.tid] = _FdTable()
            self._exec(r)
        elif r.kind.startswith("sys_exit_exec"):
            self.exec_win.pop(r.tid, None)

    def _exec(self, r: Raw) -> None:
        win = self.exec_win.pop(r.tid, {"maps": [], "kfaults": []})
        maps = [self.map_record(m.data) for m in win["maps"]]
        ev = self.emit({"k": "exec", "t": r.t, "tid": r.tid, "pid": r.pid, "path": r.data[0],
                        "maps": maps})
        first = win["maps"][0].t if win["maps"] else r.t
        # kernel faults after the first mapping of the new image are in the
        # new mm (the loader zeroing bss, create_elf_tables); before, in the old
        ev["kfaults"] = [[k.data[0], k.data[2]] for k in win["kfaults"] if k.t >= first
                         and k.data[0] < TASK_SIZE]
        t = self.fdt.get(r.tid)
        if t is not None:           # exec: an fd table of its own, close-on-exec fds closed
            self.fdt[r.tid] = _FdTable({fd: v for fd, v in t.fds.items() if not v[1]})

    def on_sched_process_exec(self, r: Raw) -> None:
        self._exec(r)

    def on_enter(self, r: Raw, name: str) -> None:
        if name in ("execve", "execveat"):
            self.exec_win[r.tid] = {"maps": [], "kfaults": []}
            return
        if name in ("exit", "exit_group"):
            return                  # the sched_process_exit events say who left
        # the CPU time before a syscall the trace keeps goes with it, the
        # time inside it is the model's to spend; other calls' time (openat,
        # close...) counts as the task's own, like read() or futex()
        rw = self.take(r.tid, r.t) if name in _TIMED else None
        self.pending[r.tid] = {"name": name, "t": r.t, "args": r.data, "maps": [], "rw": rw}

    def on_exit(self, r: Raw, name: str) -> None:
        if name in ("execve", "execveat"):
            if r.data < 0:
                self.exec_win.pop(r.tid, None)
            return
        call = self.pending.pop(r.tid, None)
        if call is None or call["name"] != name:
            return                  # a new task's first return from clone, or lost entry
        if call["rw"] is not None:
            self.take(r.tid, r.t)   # the time inside the syscall: the model's to spend
        ret = r.data
        args = call["args"]
        if name in fmt.FD_SYSCALLS:
            self._fd_call(r, name, args, ret, call)
            return
        if name in ("clone", "clone3", "fork", "vfork"):
            return                  # the sched_process_fork event made the clone event
        ev: dict[str, Any] = {"k": "sys", "t": call["t"], "tid": r.tid, "name": name,
                              "args": args, "ret": ret, "dt": r.t - call["t"]}
        if call["maps"]:
            ev["maps"] = [self.map_record(m.data) for m in call["maps"]]
        if name == "mmap" and not args[3] & MAP_ANONYMOUS and _s32(args[4]) >= 0:
            inst = self.table(r.tid).get(_s32(args[4]))
            ev["_inst"] = inst
            if ret >= 0 and ev.get("maps"):
                m = ev["maps"][0]
                if m[fmt.MAP_FILE] >= 0 and inst.file is None:
                    inst.file = m[fmt.MAP_FILE]
        self.emit(ev, call["rw"])

    def _fd_call(self, r: Raw, name: str, args: list[int], ret: int, call: dict[str, Any]) -> None:
        tab = self.table(r.tid)
        if name in ("openat", "open", "creat", "memfd_create") and ret >= 0:
            if name == "openat":
                flags = args[2]
            elif name == "open":
                flags = args[1]
            elif name == "creat":
                flags = 0o1101                            # O_CREAT|O_WRONLY|O_TRUNC
            else:
                flags = 2 | (O_CLOEXEC if args[1] & 1 else 0)   # O_RDWR, MFD_CLOEXEC
            tab.fds[ret] = (_Inst(flags & 3), bool(flags & O_CLOEXEC))
        elif name == "close" and ret == 0:
            tab.fds.pop(_s32(args[0]), None)
        elif name == "close_range" and ret == 0:
            lo, hi = args[0], min(args[1], 1 << 20)
            for fd in [fd for fd in tab.fds if lo <= fd <= hi]:
                if args[2] & CLOSE_RANGE_CLOEXEC:
                    tab.fds[fd] = (tab.fds[fd][0], True)
                else:
                    del tab.fds[fd]
        elif name in ("dup", "dup2", "dup3") and ret >= 0:
            tab.fds[ret] = (tab.get(_s32(args[0])), name == "dup3" and bool(args[2] & O_CLOEXEC))
        elif name == "fcntl" and ret >= 0:
            cmd = _s32(args[1])
            if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
                tab.fds[ret] = (tab.get(_s32(args[0])), cmd == F_DUPFD_CLOEXEC)
            elif cmd == F_SETFD:
                fd = _s32(args[0])
                tab.fds[fd] = (tab.get(fd), bool(args[2] & 1))
        elif name == "ftruncate":
            ev = {"k": "sys", "t": call["t"], "tid": r.tid, "name": name, "args": args,
                  "ret": ret, "dt": r.t - call["t"], "_inst": tab.get(_s32(args[0]))}
            self.emit(ev, call["rw"])
        elif name == "shmget":
            ev = {"k": "sys", "t": call["t"], "tid": r.tid, "name": name, "args": args,
                  "ret": ret, "dt": r.t - call["t"]}
            self.emit(ev, call["rw"])

    def on_MMAP2(self, r: Raw) -> None:  # noqa: N802 - perf's record name
        if r.tid in self.exec_win:
            self.exec_win[r.tid]["maps"].append(r)
            return
        call = self.pending.get(r.tid)
        if call is not None:
            call["maps"].append(r)
            return
        last = self.last.get(r.tid)
        if last is not None and last["k"] == "fault":
            last.setdefault("maps", []).append(self.map_record(r.data))   # the stack grew
            return
        self._drop("mappings outside any syscall or fault")

    def _fault(self, r: Raw, user: bool) -> None:
        addr, ip, err = r.data
        if r.tid in self.exec_win:
            self.exec_win[r.tid]["kfaults"].append(r)
            return
        if addr >= TASK_SIZE:
            return
        ev = {"k": "fault", "t": r.t, "tid": r.tid, "addr": addr, "err": err, "user": user}
        if user:
            ev["ip"] = ip
        self.emit(ev)

    def on_page_fault_user(self, r: Raw) -> None:
        self._fault(r, True)

    def on_page_fault_kernel(self, r: Raw) -> None:
        if r.data[0] < TASK_SIZE:
            self._fault(r, False)

    def on_signal_generate(self, r: Raw) -> None:
        sig, code, target, result = r.data
        if sig not in (SIGSEGV, SIGBUS):
            return
        last = self.last.get(target)
        if target == r.tid and last is not None and last["k"] == "fault" and "sig" not in last:
            last["sig"] = [sig, code]
            return
        self.emit({"k": "signal", "t": r.t, "tid": target, "sig": sig, "code": code,
                   "from": r.tid})

    def on_sched_process_fork(self, r: Raw) -> None:
        parent, child = r.data
        info = self.launched.clones.get(child)
        flags: int | None = None
        how = "?"
        if info is not None and info["flags"] >= 0:
            flags, how = info["flags"], info["syscall"]
        else:
            call = self.pending.get(parent)
            if call is not None and call["name"] == "clone":
                flags, how = call["args"][0], "clone"
            elif call is not None and call["name"] in ("fork", "vfork"):
                how = call["name"]
                flags = 17 if how == "fork" else 0x4111
        pid = self.child_pid.get(child, -1)
        ev = {"k": "clone", "t": r.t, "tid": parent, "child": child, "child_pid": pid,
              "syscall": how}
        if flags is not None:
            ev["flags"] = flags
        call = self.pending.get(parent)
        rw = None
        if call is not None and call["name"] in ("clone", "clone3", "fork", "vfork"):
            rw, call["rw"] = call["rw"], (0, 0)
        self.emit(ev, rw)
        self.cpu[child] = ["pre", r.t, 0, 0]
        self.task(child, pid, self.tasks.get(parent, {}).get("comm"))
        tab = self.table(parent)
        self.fdt[child] = tab if flags is not None and flags & CLONE_FILES else _FdTable(tab.fds)

    def on_FORK(self, r: Raw) -> None:  # noqa: N802
        self.child_pid[r.tid] = r.pid

    def on_COMM(self, r: Raw) -> None:  # noqa: N802
        self.task(r.tid, r.pid, r.data)

    def on_sched_process_exit(self, r: Raw) -> None:
        tid, group_dead = r.data
        if tid in self.tasks:
            self.emit({"k": "exit", "t": r.t, "tid": tid, "group_dead": group_dead})

    # -- the result --
    def finish(self, header: dict[str, Any], finals: list[Final]) -> fmt.Trace:
        if self.t0 is None:
            raise RecordError("perf saw no exec of the command (nothing was recorded)")
        for call in self.pending.values():
            self._drop(f"{call['name']} still running at the end")
        for child, pid in self.child_pid.items():
            if child in self.tasks:
                self.tasks[child]["pid"] = pid
        for ev in self.events:
            if ev["k"] == "clone" and ev["child_pid"] < 0:
                ev["child_pid"] = self.child_pid.get(ev["child"], ev["child"])
            inst = ev.pop("_inst", None)
            if inst is not None:
                ev["ofd"] = inst.id
                if inst.file is not None:
                    ev["file"] = inst.file
                if inst.mode is not None:
                    ev["fmode"] = inst.mode
        self.events.sort(key=lambda e: (e["t"], e.pop("_seq")))
        out = fmt.Trace(header)
        for info in self.files.values():
            out.files[info["id"]] = info
        out.tasks = {tid: info for tid, info in self.tasks.items()}
        for f in finals:
            out.finals.append(self._final(f))
        out.events = self.events
        header["lost"] = self.lost
        header["dropped"] = self.dropped
        return out

    def _final(self, f: Final) -> dict[str, Any]:
        assert self.t0 is not None
        maps = []
        for line in f.maps:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            name = parts[5] if len(parts) > 5 else ""
            dev, ino = parts[3], int(parts[4])
            maj, mnr = (int(x, 16) for x in dev.split(":"))
            dev = f"{maj:02x}:{mnr:02x}"
            if ino == 0 or name.startswith("["):
                maps.append([lo, hi, parts[1], int(parts[2], 16) if ino else 0, -1, name])
            elif name == "/dev/zero (deleted)" and dev == "00:01":
                maps.append([lo, hi, parts[1], int(parts[2], 16), -1, name])
            else:
                maps.append([lo, hi, parts[1], int(parts[2], 16), self.file_id(dev, ino, name), ""])
        return {"k": "final", "t": max(0, f.t - self.t0), "pid": f.pid, "tid": f.tid, "maps": maps,
                "vmflags": f.vmflags, "present": f.present}


# --------------------------------------------------------------- file sizes
def _mounts() -> dict[str, str]:
    """'maj:min' (hex, 2 digits each) -> filesystem type, from mountinfo."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if " - " not in line or len(parts) < 7:
                    continue
                maj, mnr = (int(x) for x in parts[2].split(":"))
                fstype = line.split(" - ", 1)[1].split()[0]
                out.setdefault(f"{maj:02x}:{mnr:02x}", fstype)
    except OSError:
        pass
    return out


def stat_files(files: Iterable[dict[str, Any]]) -> None:
    """Give each file its size (and filesystem) when it still exists as the
    same inode; else ``size`` is None (the replay sizes it to fit its
    mappings).  Reads no contents."""
    mounts = _mounts()
    for info in files:
        info["fs"] = mounts.get(info["dev"], "shmem" if info["dev"] == "00:01" else None)
        info["size"] = None
        name = info["name"]
        if not name.startswith("/") or name.endswith(" (deleted)"):
            continue
        try:
            st = os.stat(name)
        except OSError:
            continue
        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
        if dev == info["dev"] and st.st_ino == info["ino"]:
            info["size"] = st.st_size


# ------------------------------------------------------------------ header
def _host_value(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def host_header(argv: list[str], setup: PerfSetup) -> dict[str, Any]:
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    cmdline = _host_value("/proc/cmdline") or ""
    m = re.search(r"\bstack_guard_gap=(\d+)", cmdline)
    thp = _host_value("/sys/kernel/mm/transparent_hugepage/enabled") or ""
    thp_m = re.search(r"\[(\w+)\]", thp)

    def num(path: str) -> int | None:
        v = _host_value(path)
        return int(v) if v is not None and v.lstrip("-").isdigit() else None

    return {
        "format": fmt.FORMAT, "version": fmt.VERSION, "command": argv,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": platform.release(), "machine": platform.machine(),
        "cpus": os.cpu_count() or 1, "page_size": os.sysconf("SC_PAGE_SIZE"),
        "perf": setup.version, "clock": "CLOCK_MONOTONIC",
        "personality": "ADDR_NO_RANDOMIZE",
        "rlimit_stack": None if soft == resource.RLIM_INFINITY else soft,
        "mmap_min_addr": num("/proc/sys/vm/mmap_min_addr"),
        "max_map_count": num("/proc/sys/vm/max_map_count"),
        "overcommit_memory": num("/proc/sys/vm/overcommit_memory"),
        "stack_guard_gap": int(m.group(1)) if m else 256,
        "thp": thp_m.group(1) if thp_m else None,
        "tracepoints_missing": setup.missing,
    }


# ------------------------------------------------------------------ record
@dataclass
class Recorded:
    trace: fmt.Trace
    bytes: int
    status: int | None
    interrupted: bool
    perf_seconds: float
    convert_seconds: float


def _open_ctl(ctl: str, perf: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """The perf control fifo, once perf has opened it."""
    end = time.monotonic() + timeout
    while True:
        try:
            return os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if perf.poll() is not None or time.monotonic() > end:
                raise RecordError(_perf_died(perf)) from None
            time.sleep(0.01)


def _written(data: str) -> bool:
    """Has perf finished the file?  It writes the header's data size (the
    u64 at byte 48 of struct perf_file_header) last, once the records and
    feature sections are out."""
    try:
        with open(data, "rb") as f:
            head = f.read(56)
    except OSError:
        return False
    return len(head) == 56 and head[:8] == b"PERFILE2" and int.from_bytes(head[48:56], "little") > 0


def _wait_written(perf: subprocess.Popen[bytes], data: str, timeout: float = 120.0) -> None:
    """Wait until perf exits or has written its file.  Closing its
    tracepoint events waits for RCU grace periods, which take seconds on a
    busy machine; the file is complete before that, so perf may be left to
    finish on its own (it runs in a session of its own)."""
    end = time.monotonic() + timeout
    while perf.poll() is None and time.monotonic() < end:
        if _written(data):
            try:
                perf.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            return
        time.sleep(0.02)


def _perf_died(perf: subprocess.Popen[bytes]) -> str:
    if perf.poll() is None:
        perf.kill()
        perf.wait()
    err = perf.stderr.read().decode(errors="replace") if perf.stderr else ""
    return f"perf record failed (exit {perf.returncode}): {' '.join(err.split())[:300]}"


def record(argv: list[str], out: str, setup: PerfSetup | None = None,
           note: Callable[[str], None] = lambda s: None, quiet_stdout: bool = False) -> Recorded:
    """Record ``argv`` into the trace file ``out``.  Raises PerfUnavailable
    (perf cannot record here), RecordError (it failed).  ``quiet_stdout``:
    the command's output goes to stderr."""
    setup = setup or check_perf()
    path = shutil.which(argv[0])
    if path is None:
        raise RecordError(f"command not found: {argv[0]}")
    tmp = tempfile.mkdtemp(prefix="specfault-trace-")
    data, ctl, ack = (os.path.join(tmp, n) for n in ("perf.data", "ctl", "ack"))
    os.mkfifo(ctl)
    os.mkfifo(ack)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    t_start = time.monotonic()

    def ready(pid: int) -> None:
        cmd = record_command(setup, data, pid, ctl, ack)
        perf = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        procs["perf"] = perf
        ack_fd = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
        ctl_fd = _open_ctl(ctl, perf)
        os.write(ctl_fd, b"enable\n")
        end = time.monotonic() + 60
        got = b""
        while b"ack" not in got:
            left = end - time.monotonic()
            if left <= 0 or perf.poll() is not None:
                raise RecordError(_perf_died(perf))
            if select.select([ack_fd], [], [], min(left, 0.2))[0]:
                try:
                    got += os.read(ack_fd, 64)
                except BlockingIOError:
                    pass
        os.close(ack_fd)
        procs["ctl"] = ctl_fd              # type: ignore[assignment]
        note(f"perf attached to pid {pid}; running {' '.join(argv)}")

    try:
        launched = launch(argv, path, ready, stdout_to_stderr=quiet_stdout)
        perf = procs["perf"]
        perf.send_signal(signal.SIGINT)          # every task is gone: stop and write
        _wait_written(perf, data)
        if not os.path.exists(data):
            raise RecordError(_perf_died(perf))
        t_perf = time.monotonic() - t_start
        note("converting perf's records")
        t1 = time.monotonic()
        conv = Converter(launched)
        script = subprocess.Popen(script_command(setup, data), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, errors="replace")
        assert script.stdout is not None
        conv.feed(parse_script(script.stdout))
        script.wait()
        header = host_header(argv, setup)
        header["exit_status"] = launched.status
        header["ptrace"] = launched.traced
        if not launched.traced:
            header["ptrace_unavailable"] = launched.why_untraced
        header["partial"] = launched.interrupted
        trace = conv.finish(header, launched.finals)
        stat_files(trace.files.values())
        header["duration_ns"] = trace.events[-1]["t"] if trace.events else 0
        header["counts"] = trace.counts()
        nbytes = fmt.save(trace, out)
        return Recorded(trace, nbytes, launched.status, launched.interrupted, t_perf,
                        time.monotonic() - t1)
    finally:
        perf = procs.get("perf")
        if perf is not None and perf.poll() is None:
            perf.kill()                          # it exits once its events are closed
        if "ctl" in procs:
            try:
                os.close(procs["ctl"])             # type: ignore[arg-type]
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
