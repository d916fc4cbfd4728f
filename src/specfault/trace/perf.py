"""The host's ``perf``: is it usable here, which tracepoints to record, and
what ``perf script`` prints, parsed.

``check_perf()`` says exactly what is missing (the perf tool, tracefs, a
permission, a tracepoint) as a :class:`PerfUnavailable` whose text names
what to install or set.  ``parse_script()`` turns the lines of
``perf script -F pid,tid,time,event,trace --show-mmap-events
--show-task-events --show-switch-events --show-lost-events --ns`` into
:class:`Raw` records,
in the order perf sorted them (by timestamp).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from specfault.trace.format import FD_SYSCALLS, MEMORY_SYSCALLS, TASK_SYSCALLS

#: x86-64 syscall numbers of the syscalls a trace follows, and how many
#: arguments each takes (raw_syscalls gives six)
SYSCALLS: dict[str, tuple[int, int]] = {
    "mmap": (9, 6), "mprotect": (10, 3), "munmap": (11, 2), "brk": (12, 1), "mremap": (25, 5),
    "madvise": (28, 3), "shmget": (29, 3), "shmat": (30, 3), "shmdt": (67, 1),
    "pkey_mprotect": (329, 4), "mlock": (149, 2), "mlock2": (325, 3), "munlock": (150, 2),
    "mlockall": (151, 1), "munlockall": (152, 0), "remap_file_pages": (216, 5),
    "process_madvise": (440, 5), "mseal": (462, 3), "mbind": (237, 6), "userfaultfd": (323, 1),
    "clone": (56, 5), "clone3": (435, 2), "fork": (57, 0), "vfork": (58, 0), "execve": (59, 3),
    "execveat": (322, 5), "exit": (60, 1), "exit_group": (231, 1),
    "openat": (257, 4), "open": (2, 3), "creat": (85, 2), "close": (3, 1), "close_range": (436, 3),
    "dup": (32, 1), "dup2": (33, 2), "dup3": (292, 3), "fcntl": (72, 3), "memfd_create": (319, 2),
    "ftruncate": (77, 2),
}
NR_NAME = {nr: (name, nargs) for name, (nr, nargs) in SYSCALLS.items()}
assert set(SYSCALLS) == set(MEMORY_SYSCALLS) | set(TASK_SYSCALLS) | set(FD_SYSCALLS)
#: the filter perf applies to raw_syscalls: only the syscalls above
SYSCALL_FILTER = " || ".join(f"id == {nr}" for nr, _ in sorted(SYSCALLS.values()))

#: tracepoints a recording cannot do without (two raw_syscalls events, not
#: one per syscall: perf closes each event at its end, and every close
#: waits for an RCU grace period)
REQUIRED = ["raw_syscalls:sys_enter", "raw_syscalls:sys_exit", "exceptions:page_fault_user",
            "sched:sched_process_fork", "sched:sched_process_exit", "sched:sched_process_exec"]
#: tracepoints recorded when the kernel has them
OPTIONAL = ["exceptions:page_fault_kernel", "signal:signal_generate"]

INSTALL_HINT = ("install it (Debian: apt-get install linux-perf; Ubuntu: apt-get install "
                "linux-tools-$(uname -r); Fedora/RHEL: dnf install perf; Arch: pacman -S perf)")

_TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class PerfUnavailable(Exception):
    """perf cannot record here; the message says what to install or set."""


@dataclass
class PerfSetup:
    perf: str                 # path of the perf binary
    version: str              # "6.1.187"
    events: list[str]         # the tracepoints to record
    missing: list[str]        # optional tracepoints this kernel lacks


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def tracefs() -> str | None:
    """The directory holding tracepoint definitions (``events/``), or None."""
    for d in _TRACEFS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def check_perf(perf: str | None = None) -> PerfSetup:
    """Can this machine record a trace?  Raises PerfUnavailable saying
    what to install or set."""
    path = perf or shutil.which("perf")
    if path is None:
        raise PerfUnavailable(f"perf is not installed (no 'perf' on PATH): {INSTALL_HINT}")
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PerfUnavailable(f"{path} does not run ({exc}): {INSTALL_HINT}") from None
    m = re.search(r"perf version (\S+)", out.stdout)
    if out.returncode != 0 or m is None:
        why = " ".join((out.stderr or out.stdout).split())[:200]
        raise PerfUnavailable(f"{path} does not run here ({why}): {INSTALL_HINT} for kernel "
                              f"{os.uname().release}")
    tfs = tracefs()
    if tfs is None:
        raise PerfUnavailable("tracefs is not mounted, so perf cannot find tracepoints: "
                              "mount -t tracefs nodev /sys/kernel/tracing")
    paranoid = _read("/proc/sys/kernel/perf_event_paranoid")
    if os.geteuid() != 0 and paranoid is not None and int(paranoid) > -1:
        raise PerfUnavailable(
            f"kernel.perf_event_paranoid is {paranoid}: recording tracepoints needs root (or "
            f"CAP_PERFMON), or 'sysctl -w kernel.perf_event_paranoid=-1' and read access to "
            f"{tfs}")
    events_dir = os.path.join(tfs, "events")
    if not os.access(events_dir, os.R_OK | os.X_OK):
        raise PerfUnavailable(f"{events_dir} is not readable: run as root, or "
                              f"'chmod -R o+rx {tfs}' (with perf_event_paranoid -1)")

    def have(ev: str) -> bool:
        sys_, name = ev.split(":")
        return os.path.isdir(os.path.join(events_dir, sys_, name))

    lacking = [ev for ev in REQUIRED if not have(ev)]
    if lacking:
        need = "CONFIG_FTRACE_SYSCALLS" if any(e.startswith("raw_syscalls:") for e in lacking) \
            else "the tracepoint"
        raise PerfUnavailable(f"this kernel lacks the tracepoint(s) {', '.join(lacking)} "
                              f"({need} is needed)")
    events = list(REQUIRED) + [ev for ev in OPTIONAL if ev not in REQUIRED and have(ev)]
    missing = [ev for ev in OPTIONAL if ev not in REQUIRED and not have(ev)]
    return PerfSetup(path, m.group(1), events, missing)


def record_command(setup: PerfSetup, out: str, pid: int, ctl: str, ack: str,
                   mmap_pages: int = 2048) -> list[str]:
    """``perf record`` attached to ``pid`` (and every task it creates),
    started disabled (enabled through the ``ctl`` fifo), timestamps from
    CLOCK_MONOTONIC (the tracer's clock)."""
    cmd = [setup.perf, "record", "-q", "-d", "-N", "-B", "-k", "mono", "--switch-events",
           "-m", str(mmap_pages), "-o", out,
           "-D", "-1", "--control", f"fifo:{ctl},{ack}"]
    for ev in setup.events:
        cmd += ["-e", ev]
        if ev.startswith("raw_syscalls:"):
            cmd += ["--filter", SYSCALL_FILTER]
    return cmd + ["-p", str(pid)]


def script_command(setup: PerfSetup, data: str) -> list[str]:
    return [setup.perf, "script", "-i", data, "-F", "pid,tid,time,event,trace",
            "--show-mmap-events", "--show-task-events", "--show-switch-events",
            "--show-lost-events", "--ns"]


# --------------------------------------------------------------------- parse
@dataclass(slots=True)
class Raw:
    """One line of perf script: ``kind`` is the tracepoint name
    (``sys_enter_mmap``, ``page_fault_user``, ``sched_process_fork``...) or
    the side-band record (``MMAP2``, ``FORK``, ``EXIT``, ``COMM``,
    ``SWITCH``, ``LOST``); ``data`` its parsed fields."""

    t: int                    # ns, perf clock
    pid: int
    tid: int
    kind: str
    data: Any


_PREFIX = re.compile(r"\s*(-?\d+)/(-?\d+)\s+(?:\[\d+\]\s+)?(\d+)\.(\d{9}):\s+(.*)$")
_MMAP2 = re.compile(r"PERF_RECORD_MMAP2 (-?\d+)/(-?\d+): \[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) @ "
                    r"(0x[0-9a-f]+|0) ([0-9a-f]+):([0-9a-f]+) (\d+) (\d+)\]: ([-r][-w][-x][ps]) "
                    r"(.*)$")
_TASK = re.compile(r"PERF_RECORD_(FORK|EXIT)\((-?\d+):(-?\d+)\):\((-?\d+):(-?\d+)\)")
_COMM = re.compile(r"PERF_RECORD_COMM(?: exec)?: (.*):(-?\d+)/(-?\d+)\s*$")
_LOST = re.compile(r"PERF_RECORD_LOST\w* lost (\d+)")
_SWITCH = re.compile(r"PERF_RECORD_SWITCH(?:_CPU_WIDE)? (IN|OUT)( preempt)?")
_TP = re.compile(r"(\w+):(\w+):\s?(.*)$")
_SIGNAL = re.compile(r"sig=(\d+) errno=(-?\d+) code=(-?\d+) comm=.* pid=(\d+) grp=(\d+) res=(\d+)$")
_FORK = re.compile(r"pid=(\d+) child_comm=(.*) child_pid=(\d+)$")
_EXIT = re.compile(r"pid=(\d+) prio=-?\d+ group_dead=(\w+)")
_EXEC = re.compile(r"filename=(.*) pid=(\d+) old_pid=(\d+)$")
_KV = re.compile(r"(\w+)=(\S+)")
_RAW_ENTER = re.compile(r"NR (\d+) \(([0-9a-f, ]*)\)")
_RAW_EXIT = re.compile(r"NR (\d+) = (-?\d+)")


def _hex(s: str) -> int | None:
    try:
        return int(s, 16)
    except ValueError:
        return None


def parse_line(line: str) -> Raw | None:
    """One line of perf script, or None for a line the recorder does not use
    (kernel MMAP records, unparsable noise)."""
    m = _PREFIX.match(line)
    if m is None:
        return None
    pid, tid = int(m.group(1)), int(m.group(2))
    t = int(m.group(3)) * 1_000_000_000 + int(m.group(4))
    rest = m.group(5)
    if rest.startswith("PERF_RECORD_"):
        if rest.startswith("PERF_RECORD_MMAP2"):
            mm = _MMAP2.match(rest)
            if mm is None:
                return None
            start, length = int(mm.group(3), 16), int(mm.group(4), 16)
            return Raw(t, int(mm.group(1)), int(mm.group(2)), "MMAP2", (
                start, start + length, mm.group(10), int(mm.group(5), 16),
                f"{int(mm.group(6), 16):02x}:{int(mm.group(7), 16):02x}", int(mm.group(8)),
                mm.group(11)))
        mt = _TASK.match(rest)
        if mt is not None:
            return Raw(t, int(mt.group(2)), int(mt.group(3)), mt.group(1),
                       (int(mt.group(4)), int(mt.group(5))))
        mc = _COMM.match(rest)
        if mc is not None:
            return Raw(t, int(mc.group(2)), int(mc.group(3)), "COMM", mc.group(1))
        msw = _SWITCH.match(rest)
        if msw is not None:
            # data: "in", "out" (the task blocked), "preempt" (switched out runnable)
            return Raw(t, pid, tid, "SWITCH", "in" if msw.group(1) == "IN" else
                       ("preempt" if msw.group(2) else "out"))
        ml = _LOST.search(rest)
        if ml is not None:
            return Raw(t, pid, tid, "LOST", int(ml.group(1)))
        return None
    mtp = _TP.match(rest)
    if mtp is None:
        return None
    name, args = mtp.group(2), mtp.group(3)
    if name == "sys_enter" and mtp.group(1) == "raw_syscalls":
        mr = _RAW_ENTER.match(args)
        known = NR_NAME.get(int(mr.group(1))) if mr else None
        if mr is None or known is None:
            return None
        vals = [int(x, 16) for x in mr.group(2).split(", ")][:known[1]]
        return Raw(t, pid, tid, f"sys_enter_{known[0]}", vals)
    if name == "sys_exit" and mtp.group(1) == "raw_syscalls":
        mx = _RAW_EXIT.match(args)
        known = NR_NAME.get(int(mx.group(1))) if mx else None
        if mx is None or known is None:
            return None
        return Raw(t, pid, tid, f"sys_exit_{known[0]}", int(mx.group(2)))
    if name.startswith("sys_enter_"):
        vals = []
        for part in args.split(", "):
            _, _, v = part.rpartition(": ")
            x = _hex(v)
            if x is None:
                return None
            vals.append(x)
        return Raw(t, pid, tid, name, vals)
    if name.startswith("sys_exit_"):
        x = _hex(args.strip())
        if x is None:
            return None
        if x >= 1 << 63:
            x -= 1 << 64                     # a negative errno
        return Raw(t, pid, tid, name, x)
    if name in ("page_fault_user", "page_fault_kernel"):
        kv = dict(_KV.findall(args))
        addr, err = _hex(kv.get("address", "")), _hex(kv.get("error_code", ""))
        if addr is None or err is None:
            return None                      # a kernel address (printed as a symbol)
        ip = _hex(kv.get("ip", ""))
        return Raw(t, pid, tid, name, (addr, ip if ip is not None else -1, err))
    if name == "signal_generate":
        ms = _SIGNAL.search(args)
        if ms is None:
            return None
        return Raw(t, pid, tid, name, (int(ms.group(1)), int(ms.group(3)), int(ms.group(4)),
                                       int(ms.group(6))))
    if name == "sched_process_fork":
        mf = _FORK.search(args)
        return None if mf is None else Raw(t, pid, tid, name, (int(mf.group(1)), int(mf.group(3))))
    if name == "sched_process_exit":
        me = _EXIT.search(args)
        return None if me is None else Raw(t, pid, tid, name, (int(me.group(1)),
                                                               me.group(2) == "true"))
    if name == "sched_process_exec":
        mx = _EXEC.search(args)
        return None if mx is None else Raw(t, pid, tid, name, (mx.group(1), int(mx.group(2)),
                                                               int(mx.group(3))))
    return None


def parse_script(lines: Iterable[str]) -> Iterator[Raw]:
    for line in lines:
        raw = parse_line(line)
        if raw is not None:
            yield raw
