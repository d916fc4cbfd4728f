"""Swap on the host kernel, for the oracle's --swap mode, its swap tests and
the host pressure benchmark: one swap file, set up and torn down around a
run, under a lock so that concurrent runs take turns.

Host swap is system-wide: a second swap file enabled beside ours would
take some of the pages written out, and ``swapoff`` of one run's file would
pull in the pages of another's, and a host run that relies on swap being
off (MADV_PAGEOUT then leaves anonymous and shmem pages in place) would see
it on.  Every user of swap therefore holds ``LOCK_PATH`` (an fcntl lock:
released by the kernel if the holder dies) exclusively for as long as its
swap file is on, and a host run that needs swap off holds it shared
(``no_swap``); the others wait.

While the file is on, ``/proc/sys/vm/page-cluster`` is 0 (restored
afterwards): swap-in then reads only the faulting page.  The model does no
swap readahead, and readahead's window depends on earlier faults — other
programs' — so with it on the host's pswpin would not be a function of the
program.

``HostSwap`` needs Linux, root and mkswap/swapon/swapoff (``unavailable``
says what is missing); it refuses to run beside a swap device it did not
create (its counters and its capacity would not be the program's alone).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

PAGE_SIZE = 4096
LOCK_PATH = "/tmp/specfault-host-swap.lock"
PAGE_CLUSTER = "/proc/sys/vm/page-cluster"
SWAP_DIR = "/var/tmp"              # a disk filesystem: tmpfs takes no swap file
DEFAULT_MIB = 64
TOOLS = ("mkswap", "swapon", "swapoff")


class SwapUnavailable(RuntimeError):
    """Swap cannot be set up on this host (not Linux, not root, no tools, foreign swap)."""


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def unavailable() -> str | None:
    """None if ``HostSwap`` can run here, else the reason it cannot."""
    if sys.platform != "linux":
        return "swap on the host needs Linux"
    if os.geteuid() != 0:
        return "creating and enabling a swap file needs root"
    missing = [t for t in TOOLS if not _tool(t)]
    if missing:
        return f"no {', '.join(missing)} on this host"
    return None


class _ProcessLock:
    """The host-swap lock as this process holds it: one open file, so that
    a process holding it shared (a host run) may also take it exclusively
    (a swap file on, in the same test session) by converting its own hold —
    two descriptors of one process would wait for each other.  Nested
    holds are counted; the file lock follows the strongest one left."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fh: IO[str] | None = None
        self.shared = 0
        self.exclusive = 0

    def _set(self, op: int) -> None:
        if self.fh is None:
            self.fh = open(self.path, "a")
        fcntl.flock(self.fh, op)
        if op == fcntl.LOCK_UN:
            self.fh.close()
            self.fh = None

    @contextmanager
    def hold(self, shared: bool) -> Iterator[None]:
        if shared:
            self.shared += 1
            if self.shared == 1 and not self.exclusive:
                self._set(fcntl.LOCK_SH)
        else:
            self.exclusive += 1
            if self.exclusive == 1:
                self._set(fcntl.LOCK_EX)
        try:
            yield
        finally:
            if shared:
                self.shared -= 1
            else:
                self.exclusive -= 1
            if not self.exclusive:
                self._set(fcntl.LOCK_SH if self.shared else fcntl.LOCK_UN)


_LOCK = _ProcessLock(LOCK_PATH)


def swap_lock(shared: bool = False) -> Any:
    """``with swap_lock():`` hold the host-swap lock, blocking until a
    conflicting holder (another process) is done: exclusively to turn
    swap on (HostSwap), shared (``no_swap``) for a host run that relies on
    swap being off."""
    return _LOCK.hold(shared)


def no_swap() -> Any:
    """``with no_swap():`` — no other process's swap file is on meanwhile
    (the host-swap lock held shared): for host runs whose MADV_PAGEOUT
    must find no swap (the oracle without --swap, tests/mm's host runs).
    Inside this process's own HostSwap it holds nothing more: the caller
    turned swap on and knows it."""
    return swap_lock(shared=True)


def active_swaps() -> list[str]:
    """The swap areas now enabled (/proc/swaps, header skipped)."""
    with open("/proc/swaps") as f:
        return [line.split()[0] for line in f.read().splitlines()[1:] if line.strip()]


class HostSwap:
    """``with HostSwap(mib) as s:`` — a ``mib`` MiB swap file enabled on the
    host (``s.path``; ``s.pages`` its size in pages, header included: the
    model's ``swap_pages``), page-cluster 0, all under ``swap_lock``; on
    exit (also on an exception or Ctrl-C) swapoff, the file removed,
    page-cluster restored, the lock released."""

    def __init__(self, mib: int = DEFAULT_MIB, directory: str = SWAP_DIR,
                 pages: int | None = None) -> None:
        if pages is not None:
            # a device of ``pages`` pages, header included (a tiny one fills
            # up: the swap-full cases); mkswap needs the header and 10 slots
            if not 11 <= pages <= 1 << 24:
                raise ValueError(f"HostSwap: {pages} pages is not in 11..16777216")
        elif not 1 <= mib <= 1 << 16:
            raise ValueError(f"HostSwap: {mib} MiB is not in 1..65536")
        self.mib = mib
        self.pages = pages if pages is not None else mib * (1 << 20) // PAGE_SIZE
        self.path = os.path.join(directory, f"specfault-swap-{os.getpid()}")
        self._lock = swap_lock()
        self._page_cluster: str | None = None
        self._on = False

    def __enter__(self) -> HostSwap:
        why = unavailable()
        if why:
            raise SwapUnavailable(why)
        self._lock.__enter__()
        try:
            self._setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _setup(self) -> None:
        foreign = active_swaps()
        if foreign:
            raise SwapUnavailable(f"swap is already on ({', '.join(foreign)}): the counters "
                                  "and the capacity would not be this run's alone")
        with open(self.path, "wb") as f:            # written, not sparse: swapon refuses holes
            chunk = bytes(1 << 20)
            left = self.pages * PAGE_SIZE
            while left:
                f.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
        os.chmod(self.path, 0o600)
        for tool in ("mkswap", "swapon"):
            r = subprocess.run([str(_tool(tool)), self.path], capture_output=True, text=True)
            if r.returncode != 0:
                raise SwapUnavailable(f"{tool} {self.path} failed: {r.stderr.strip()}")
        self._on = True
        with open(PAGE_CLUSTER) as f:
            self._page_cluster = f.read().strip()
        with open(PAGE_CLUSTER, "w") as f:
            f.write("0")

    def __exit__(self, *exc: object) -> None:
        try:
            if self._page_cluster is not None:
                with open(PAGE_CLUSTER, "w") as f:
                    f.write(self._page_cluster)
                self._page_cluster = None
            if self._on or self.path in active_swaps():
                subprocess.run([str(_tool("swapoff")), self.path], capture_output=True)
                self._on = False
            if os.path.exists(self.path):
                os.unlink(self.path)
        finally:
            self._lock.__exit__(None, None, None)


VMSTAT_COUNTERS = ("pswpin", "pswpout")


def vmstat(names: tuple[str, ...] = VMSTAT_COUNTERS) -> dict[str, int]:
    """Selected /proc/vmstat counters."""
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, _, v = line.partition(" ")
            if k in names:
                out[k] = int(v)
    return out


def majflt(pid: int) -> int:
    """The task's major faults (/proc/PID/stat field 12, maj_flt)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return int(text[text.rindex(")") + 2:].split()[9])
