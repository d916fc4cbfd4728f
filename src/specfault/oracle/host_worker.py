"""The body of one host worker process: it owns a real address space and runs steps.

A worker is forked by the coordinator (process 0) or by another worker (a
``fork`` step).  It loops: receive a step, execute it with raw system calls
and the C probes, reply with the raw outcome (absolute addresses, errno
numbers, signal numbers); the coordinator normalises and snapshots.

Contract per step (all replies are dicts):
    syscalls  {"ret": int} or {"errno": int}
    touch     {"data": hex} (read) / {"ret": 0} (write, exec), or {"sig", "code", "addr"}
    fork      {"ret": child_pid} plus the child's socket end as an SCM_RIGHTS fd
    exit      no reply: the worker _exits and the coordinator sees EOF once
              the mm is torn down (exit_mm runs before exit_files)
"""

from __future__ import annotations

import ctypes
import os
import socket
from typing import Any

from . import probe, wire
from .program import FALLOC, MADV, MAP, MREMAP, PAGE_SIZE, prot_value

SYS_MMAP, SYS_MPROTECT, SYS_MUNMAP, SYS_MREMAP, SYS_MADVISE = 9, 10, 11, 25, 28
SYS_FTRUNCATE, SYS_FALLOCATE = 77, 285

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def syscall(nr: int, *args: int) -> dict[str, int]:
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if ret == -1:
        return {"errno": ctypes.get_errno()}
    return {"ret": ret}


class Worker:
    """State of one worker: its socket, the window, the file descriptors."""

    def __init__(self, sock: socket.socket, region_start: int, window: tuple[int, int],
                 fds: list[int], paths: list[str]) -> None:
        self.sock = sock
        self.paths = paths
        self.region_start = region_start
        self.window = window              # [lo, hi) absolute addresses
        self.fds = fds
        self.lib = probe.load()

    def addr(self, page: int | None, misalign: int = 0) -> int:
        return 0 if page is None else self.region_start + page * PAGE_SIZE + misalign

    def inside(self, addr: int) -> bool:
        return self.window[0] <= addr < self.window[1]

    # ---- the loop ----
    def serve(self) -> None:
        while True:
            try:
                step, _ = wire.recv(self.sock)
            except (wire.WorkerGone, OSError):
                os._exit(0)
            if step["op"] == "exit":
                os._exit(0)
            if step["op"] == "fork":
                self.fork()
                continue
            wire.send(self.sock, self.execute(step))

    def fork(self) -> None:
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            self.sock.close()
            mine.close()
            self.sock = theirs
            return
        theirs.close()
        wire.send(self.sock, {"ret": pid}, fds=[mine.fileno()])
        mine.close()

    def execute(self, s: dict[str, Any]) -> dict[str, Any]:
        op = s["op"]
        if op == "mmap":
            flags = sum(MAP[n] for n in set(s["flags"]))
            f = s.get("file")
            fd = self.fds[f] if f is not None else -1
            res = syscall(SYS_MMAP, self.addr(s["page"]), s["npages"] * PAGE_SIZE,
                          prot_value(s["prot"]), flags, fd, s.get("offset", 0) * PAGE_SIZE)
            return self.contain(res, s["npages"])
        if op == "munmap":
            return syscall(SYS_MUNMAP, self.addr(s["page"], s.get("misalign", 0)), s["npages"] * PAGE_SIZE)
        if op == "mprotect":
            return syscall(SYS_MPROTECT, self.addr(s["page"], s.get("misalign", 0)),
                           s["npages"] * PAGE_SIZE, prot_value(s["prot"]))
        if op == "madvise":
            return syscall(SYS_MADVISE, self.addr(s["page"]), s["npages"] * PAGE_SIZE, MADV[s["advice"]])
        if op == "mremap":
            flags = sum(MREMAP[n] for n in set(s.get("flags", [])))
            new = self.addr(s.get("new_page")) if s.get("new_page") is not None else 0
            res = syscall(SYS_MREMAP, self.addr(s["page"]), s["npages"] * PAGE_SIZE,
                          s["new_npages"] * PAGE_SIZE, flags, new)
            return self.contain(res, s["new_npages"])
        if op == "touch":
            return self.touch(s)
        if op == "pread":
            try:
                return {"data": os.pread(self.fds[s["file"]], s["len"], s["off"]).hex()}
            except OSError as exc:
                return {"errno": exc.errno}
        if op == "pwrite":
            try:
                return {"ret": os.pwrite(self.fds[s["file"]], bytes([s["val"]]) * s["len"], s["off"])}
            except OSError as exc:
                return {"errno": exc.errno}
        if op == "ftruncate":
            return syscall(SYS_FTRUNCATE, self.fds[s["file"]], s["size"])
        if op == "fallocate":
            return syscall(SYS_FALLOCATE, self.fds[s["file"]], sum(FALLOC[n] for n in set(s["mode"])),
                           s["off"], s["len"])
        if op == "otrunc":
            try:
                os.close(os.open(self.paths[s["file"]], os.O_RDWR | os.O_TRUNC))
            except OSError as exc:
                return {"errno": exc.errno}
            return {"ret": 0}
        raise AssertionError(f"Worker.execute: unknown op {op!r}")

    def contain(self, res: dict[str, int], npages: int) -> dict[str, int]:
        """A mapping that landed outside the window is unmapped at once (the model does the same)."""
        if "ret" in res and not self.inside(res["ret"]):
            syscall(SYS_MUNMAP, res["ret"], npages * PAGE_SIZE)
        return res

    def touch(self, s: dict[str, Any]) -> dict[str, Any]:
        addr = self.addr(s["page"], s.get("off", 0))
        kind = s["kind"]
        if kind == "read":
            n = s.get("len", 8)
            buf = ctypes.create_string_buffer(n)
            r = self.lib.probe_read(addr, buf, n)
            out: dict[str, Any] = {"data": buf.raw.hex()} if r == 0 else {}
        elif kind == "write":
            data = bytes([s.get("val", 0x50)])
            r = self.lib.probe_write(addr, data, len(data))
            out = {"ret": 0}
        else:
            r = self.lib.probe_exec(addr)
            out = {"ret": 0}
        if r != 0:
            sig, code, si_addr = probe.last_signal(self.lib)
            return {"sig": sig, "code": code, "addr": si_addr}
        return out


def pin_to_one_cpu() -> int:
    """Run this worker (and the processes it forks) on one CPU: LRU add
    batches are per CPU and MADV_PAGEOUT drains only the local one, so a
    page faulted in on another CPU may still sit in that CPU's batch —
    not on the LRU — and be skipped (seen by hand on the reference host).
    The CPU is one of those allowed, chosen by pid so parallel jobs spread."""
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[os.getpid() % len(allowed)]
    os.sched_setaffinity(0, {cpu})
    return cpu


def worker_main(sock: socket.socket, region_start: int, window: tuple[int, int],
                region_pages: int, paths: list[str]) -> None:
    """Entry of process 0 (just forked from the coordinator): set up, then serve forever."""
    try:
        pin_to_one_cpu()
        lib = probe.load()
        if lib.probe_install() != 0:
            raise OSError("probe_install failed")
        fds = [os.open(p, os.O_RDWR) for p in paths]
        lo, hi = window
        res = syscall(SYS_MMAP, lo, hi - lo, 0,
                      MAP["MAP_PRIVATE"] | MAP["MAP_ANONYMOUS"] | MAP["MAP_NORESERVE"]
                      | MAP["MAP_FIXED_NOREPLACE"], -1, 0)
        if res.get("ret") != lo:
            raise OSError(f"cannot reserve the window at {lo:#x}: {res}")
        res = syscall(SYS_MUNMAP, region_start, region_pages * PAGE_SIZE)
        if res.get("ret") != 0:
            raise OSError(f"cannot open the region: {res}")
        worker = Worker(sock, region_start, window, fds, paths)
        wire.send(sock, {"ready": True})
    except BaseException as exc:  # report, then die: the coordinator records the error
        try:
            wire.send(sock, {"ready": False, "error": repr(exc)})
        finally:
            os._exit(1)
    worker.serve()
    os._exit(0)
