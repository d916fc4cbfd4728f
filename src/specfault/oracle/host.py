"""Host runner: execute programs on the real Linux kernel and record what it did.

Shape:  caller --(stdin/stdout JSON lines)--> coordinator subprocess
        coordinator --(Unix sockets)--> worker processes, one per program process

The coordinator (``python -m specfault.oracle.host``) is started once and
serves many programs; each program gets fresh workers forked from it, so
every program runs in fresh address spaces with an identical layout.  A
worker executes steps; the coordinator reads the workers'
/proc/PID/{maps,smaps,pagemap} after every step (it is root, so PFNs are
visible) and builds the normalised record (record.py).

The window sits 1 GiB below the coordinator's lowest mmap-area mapping and is
2 MiB aligned, so (a) a mapping that does not fit at its hint goes above it,
outside, as in the model, and (b) fault-around windows (aligned in PTE index)
line up with the model's.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any

from . import probe, wire
from .hostswap import active_swaps, majflt, no_swap, vmstat
from .program import PAGE_SIZE, Program, file_contents
from .record import (
    Geometry,
    Labeller,
    PageObs,
    ProcObs,
    counter_deltas,
    fresh_positions,
    normalise_result,
    parse_smaps,
    snapshot,
)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STEP_TIMEOUT = 20.0
#: a swap-mode record's error when another swap area came or went, or
#: memory reclaim ran (RECLAIM_SCANS), during the program: the system-wide
#: counters and the program's swap were not its own (HostRunner runs it again)
SWAP_DISTURBED = "host swap disturbed"
RETRIES_DISTURBED = 3
#: reclaim other than MADV_PAGEOUT's (which counts none of these): kswapd or
#: direct reclaim — the machine, or another process's memory cgroup, under
#: pressure — may swap the program's pages and adds to pswpout
RECLAIM_SCANS = ("pgscan_kswapd", "pgscan_direct", "pgscan_khugepaged")
SHM = "/dev/shm"


class HostUnavailable(RuntimeError):
    """The host kernel cannot be used as an oracle here (not Linux x86-64, not root, no compiler)."""


def check_host() -> None:
    """Raise HostUnavailable unless programs can run on this host."""
    if sys.platform != "linux":
        raise HostUnavailable("the host oracle needs Linux")
    if os.geteuid() != 0:
        raise HostUnavailable("the host oracle needs root to read PFNs from /proc/PID/pagemap")
    try:
        probe.build()
    except probe.ProbeUnavailable as exc:
        raise HostUnavailable(str(exc)) from None


# --------------------------------------------------------------------------------------
# coordinator side (runs in the subprocess)


def _window_base(nbytes: int) -> int:
    lowest = min(int(line.split("-")[0], 16) for line in open("/proc/self/maps")
                 if int(line.split("-")[0], 16) >= 0x700000000000)
    base = (lowest - (1 << 30) - nbytes) & ~((2 << 20) - 1)
    return base


def _zero_pfn() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    addr = libc.mmap(None, PAGE_SIZE, 1, 0x22, -1, 0)
    ctypes.c_char.from_address(addr).value  # noqa: B018 -- read fault maps the zero page
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        raw = int.from_bytes(os.pread(fd, 8, addr // PAGE_SIZE * 8), "little")
    finally:
        os.close(fd)
    obs = PageObs.from_raw(raw)
    if not obs.present or obs.pfn == 0:
        raise HostUnavailable("cannot see PFNs in /proc/self/pagemap (not root?)")
    return obs.pfn


def _observe(pid: int, geo: Geometry, npages: int) -> ProcObs:
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    with open(f"/proc/{pid}/smaps") as f:
        smaps = parse_smaps(f.read(), maps, geo.lo, geo.hi)
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, npages * 8, geo.lo // PAGE_SIZE * 8)
    finally:
        os.close(fd)
    pages = [PageObs.from_raw(int.from_bytes(raw[i:i + 8], "little")) for i in range(0, len(raw), 8)]
    return ProcObs(maps, pages, smaps)


class Coordinator:
    """``swap``: record each step's counters (record.COUNTERS): pswpin and
    pswpout from /proc/vmstat (system-wide: the caller holds the host
    swap lock with its own swap file the only one, hostswap.HostSwap) and
    the stepping task's major faults (/proc/PID/stat, per task)."""

    def __init__(self, swap: bool = False) -> None:
        self.swap = swap
        probe.load()          # build/load before forking so workers inherit it
        self.zero_pfn = _zero_pfn()
        self.max_window = 4096 + 2 * 512
        self.base = _window_base(self.max_window * PAGE_SIZE)

    def run(self, prog: Program) -> dict[str, Any]:
        tmpdir = tempfile.mkdtemp(prefix="specfault-oracle-", dir=SHM if os.path.isdir(SHM) else None)
        pids: list[int] = []
        try:
            return self._run(prog, tmpdir, pids)
        finally:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._reap()
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def _run(self, prog: Program, tmpdir: str, pids: list[int]) -> dict[str, Any]:
        from .host_worker import worker_main

        paths = []
        for k, f in enumerate(prog.files):
            path = os.path.join(tmpdir, f"f{k}")
            with open(path, "wb") as fh:
                fh.write(file_contents(k, f["size"]))
            paths.append(path)
        region_start = self.base + prog.guard * PAGE_SIZE
        geo = Geometry(region_start, prog.guard, prog.region, paths)
        record: dict[str, Any] = {"side": "host", "initial": None, "steps": [], "error": None}

        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            try:
                mine.close()
                worker_main(theirs, region_start, (geo.lo, geo.hi), prog.region, paths)
            finally:
                os._exit(1)
        theirs.close()
        mine.settimeout(STEP_TIMEOUT)
        pids.append(pid)
        socks: dict[int, socket.socket] = {0: mine}
        procs: dict[int, int] = {0: pid}
        hello, _ = wire.recv(mine)
        if not hello.get("ready"):
            record["error"] = f"host worker setup failed: {hello.get('error')}"
            return record
        labeller = Labeller()
        npages = prog.window_pages

        def observe(fresh: set[tuple[int, int]]) -> dict[str, Any]:
            obs = {p: _observe(procs[p], geo, npages) for p in sorted(procs)}
            return snapshot(geo, obs, labeller, self.zero_pfn, fresh)

        record["initial"] = observe(set())
        swaps = active_swaps() if self.swap else None
        scans = vmstat(RECLAIM_SCANS) if self.swap else None
        for i, step in enumerate(prog.steps):
            p = step.get("proc", 0)
            sock = socks[p]
            before = self._counters(procs[p])
            try:
                wire.send(sock, step)
                if step["op"] == "exit":
                    try:
                        wire.recv(sock)
                        raise RuntimeError("exit: the worker replied instead of exiting")
                    except wire.WorkerGone:
                        pass
                    sock.close()
                    del socks[p], procs[p]
                    raw: dict[str, Any] = {"ret": 0}
                elif step["op"] == "fork":
                    reply, fds = wire.recv(sock, want_fds=1)
                    child = len(pids)
                    pids.append(reply["ret"])
                    procs[child] = reply["ret"]
                    socks[child] = socket.socket(fileno=fds[0])
                    socks[child].settimeout(STEP_TIMEOUT)
                    raw = {"child": child}
                else:
                    raw, _ = wire.recv(sock)
            except (wire.WorkerGone, OSError, RuntimeError) as exc:
                record["error"] = f"step {i}: host worker failed: {exc!r}"
                record["error_step"] = i
                return record
            result = normalise_result(geo, step, raw)
            after = self._counters(procs.get(p))
            if after is not None and before is not None and p not in procs:
                after["majflt"] = before["majflt"]       # exited: no fault of its own
            state = observe(fresh_positions(geo, step, result))
            rec_step: dict[str, Any] = {"result": result, "state": state}
            if before is not None and after is not None:
                rec_step["counters"] = counter_deltas(before, after)
                why = ""
                if active_swaps() != swaps:
                    why = f"swap areas {swaps} became {active_swaps()}"
                elif vmstat(RECLAIM_SCANS) != scans:
                    why = f"memory reclaim ran ({scans} became {vmstat(RECLAIM_SCANS)})"
                if why:
                    record["error"] = f"{SWAP_DISTURBED}: {why}"
                    record["error_step"] = i
                    return record
            record["steps"].append(rec_step)
        for s in socks.values():
            s.close()
        return record


    def _counters(self, pid: int | None) -> dict[str, int] | None:
        """The counters now (swap mode); a process that exited counts 0 faults."""
        if not self.swap:
            return None
        out = vmstat()
        out["majflt"] = majflt(pid) if pid is not None else 0
        return out


def serve() -> None:
    """Coordinator main loop: one program JSON per stdin line -> one record JSON per stdout line.

    Ctrl-C is the caller's to handle: the coordinator (and the workers it
    forks) ignore SIGINT, end when stdin closes, and die with the caller
    (PR_SET_PDEATHSIG), so an interrupted campaign prints no traceback
    from here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    out = sys.stdout
    sys.stdout = sys.stderr   # nothing else may write to the protocol stream
    try:
        _serve(out)
    except BrokenPipeError:
        # the caller is gone (killed by Ctrl-C, perhaps while this
        # coordinator was still starting): end quietly, and let the
        # interpreter's final flush of the dead pipe go nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def _serve(out: Any) -> None:
    try:
        coord = Coordinator(swap="--swap" in sys.argv[1:])
        out.write(json.dumps({"ready": True}) + "\n")
    except Exception as exc:  # report why the host is unusable
        out.write(json.dumps({"ready": False, "error": repr(exc)}) + "\n")
        out.flush()
        return
    out.flush()
    for line in sys.stdin:
        try:
            prog = Program.loads(line)
            rec = coord.run(prog)
        except Exception as exc:  # a coordinator bug must not hang the caller
            rec = {"side": "host", "initial": None, "steps": [], "error": f"coordinator: {exc!r}"}
        out.write(json.dumps(rec) + "\n")
        out.flush()


# --------------------------------------------------------------------------------------
# caller side


class HostRunner:
    """Runs programs on the host kernel through one long-lived coordinator subprocess."""

    def __init__(self, swap: bool = False) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.swap = swap          # record counters (the caller has swap on: hostswap.HostSwap)

    def _start(self) -> subprocess.Popen[str]:
        check_host()
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen([sys.executable, "-m", "specfault.oracle.host"]
                                + (["--swap"] if self.swap else []), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        hello = json.loads(proc.stdout.readline() or '{"ready": false, "error": "no reply"}')
        if not hello.get("ready"):
            proc.kill()
            raise HostUnavailable(f"host coordinator: {hello.get('error')}")
        atexit.register(self.close)
        return proc

    def run(self, prog: Program) -> dict[str, Any]:
        """The host's record of ``prog``; a swap-mode run another swap
        area disturbed is run again (up to RETRIES_DISTURBED times)."""
        if self.swap:                # the caller holds HostSwap (the lock, exclusively)
            rec = self._run(prog)
        else:
            with no_swap():          # no other process's swap file on meanwhile
                rec = self._run(prog)
        for _ in range(RETRIES_DISTURBED):
            if not str(rec.get("error") or "").startswith(SWAP_DISTURBED):
                break
            rec = self._run(prog)
        return rec

    def _run(self, prog: Program) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(prog.dumps() + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc = None
            return {"side": "host", "initial": None, "steps": [], "error": "host coordinator died"}
        rec: dict[str, Any] = json.loads(line)
        return rec

    def abort(self) -> None:
        """Kill the coordinator now (Ctrl-C): no waiting for a program to finish."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


if __name__ == "__main__":
    serve()
