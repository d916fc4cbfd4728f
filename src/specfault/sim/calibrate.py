"""``specfault calibrate``: measure on the host what can be measured, and
write a cost profile.

Measured (all through ctypes on this process, no root needed):

* minor anonymous write-fault cost: mmap a fresh anonymous region, touch one
  byte per page, munmap; per page (the fault, its clear_page and the
  allocation together);
* mmap + munmap of a small anonymous region, per pair;
* page copy: ``ctypes.memmove`` of 4 KiB between two cache-cold buffers
  (copy_page); page clear: ``ctypes.memset`` of 4 KiB (clear_page).

Derived: ``fault_entry_ns`` = measured fault − (what the simulator charges a
1-CPU fault besides it: clear_page, allocation, the ops of the classic
path), so a 1-thread pft in the simulator reproduces the host's fault cost.
``vma_modify_ns`` is scaled the same way from the mmap+munmap pair.  Costs
that need many CPUs (line transfers, DRAM bandwidth, IPIs) keep their
documented defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import time
from dataclasses import replace

from specfault.sim.cost import CostProfile

PAGE = 4096


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def touch_round(pages: int) -> tuple[float, float]:
    """Map ``pages`` fresh anonymous pages on the host and write a byte to
    each twice: returns (seconds per first touch — one minor write fault
    plus the loop —, seconds per second touch — the loop alone)."""
    libc = _libc()
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    addr = libc.mmap(None, pages * PAGE, prot, flags, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    buf = (ctypes.c_char * (pages * PAGE)).from_address(addr)
    t0 = time.perf_counter()
    for i in range(0, pages * PAGE, PAGE):
        buf[i] = b"x"
    t1 = time.perf_counter()
    for i in range(0, pages * PAGE, PAGE):
        buf[i] = b"y"
    t2 = time.perf_counter()
    libc.munmap(addr, pages * PAGE)
    return (t1 - t0) / pages, (t2 - t1) / pages


def fault_ns(pages: int = 4096, rounds: int = 5) -> float:
    """Best-of-``rounds`` host cost of one anonymous write fault (ns), the
    touch loop's own cost (measured on already-faulted pages) taken off."""
    best = float("inf")
    for _ in range(rounds):
        first, second = touch_round(pages)
        best = min(best, (first - second) * 1e9)
    return best


def mmap_munmap_ns(iters: int = 2000) -> float:
    libc = _libc()
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    mm_, mu = libc.mmap, libc.munmap
    t0 = time.perf_counter_ns()
    for _ in range(iters):
        a = mm_(None, 32 * PAGE, prot, flags, -1, 0)
        mu(a, 32 * PAGE)
    return (time.perf_counter_ns() - t0) / iters


def copy_page_ns(iters: int = 4000) -> tuple[float, float]:
    """(copy, clear) of 4 KiB, walking a 64 MiB buffer so lines are cold."""
    span = 64 << 20
    src = ctypes.create_string_buffer(span)
    dst = ctypes.create_string_buffer(span)
    base_s, base_d = ctypes.addressof(src), ctypes.addressof(dst)
    n = span // PAGE
    t0 = time.perf_counter_ns()
    for i in range(iters):
        off = (i * 7919 % n) * PAGE
        ctypes.memmove(base_d + off, base_s + off, PAGE)
    t1 = time.perf_counter_ns()
    for i in range(iters):
        off = (i * 7919 % n) * PAGE
        ctypes.memset(base_d + off, 0, PAGE)
    t2 = time.perf_counter_ns()
    # subtract the loop's and the ctypes call's own cost (zero-length calls)
    t3 = time.perf_counter_ns()
    for i in range(iters):
        off = (i * 7919 % n) * PAGE
        ctypes.memmove(base_d + off, base_s + off, 0)
    call = (time.perf_counter_ns() - t3) / iters
    return max(20.0, (t1 - t0) / iters - call), max(20.0, (t2 - t1) / iters - call)


def measure() -> dict[str, float]:
    copy, clear = copy_page_ns()
    return {"fault_ns": fault_ns(), "mmap_munmap_ns": mmap_munmap_ns(),
            "copy_page_ns": copy, "clear_page_ns": clear}


def profile_from(m: dict[str, float], base: CostProfile | None = None) -> CostProfile:
    """A profile whose 1-CPU fault and mmap+munmap match the measurements."""
    from specfault.sim.bench import run

    base = base or CostProfile()
    work = dict(base.work_ns)
    work["copy_page"] = round(m["copy_page_ns"], 1)
    work["clear_page"] = round(m["clear_page_ns"], 1)
    prof = replace(base, work_ns=work, fault_entry_ns=0.0)
    # what the simulator charges a 1-CPU fault without fault_entry_ns
    r = run("pft", "classic", 1, profile=replace(prof, work_ns={**work, "user_ns": 0.0}),
            faults=2000, think_ns=0.0)
    rest = r.fault_lat["mean"] * 1e3
    entry = max(50.0, m["fault_ns"] - rest)
    # an mmap + munmap pair: two syscalls and two write sections in the model
    vma = max(100.0, (m["mmap_munmap_ns"] - 2 * work["syscall"]) / 2 - 300.0)
    src = (f"calibrated on this host: fault {m['fault_ns']:.0f} ns, mmap+munmap "
           f"{m['mmap_munmap_ns']:.0f} ns, copy_page {m['copy_page_ns']:.0f} ns, "
           f"clear_page {m['clear_page_ns']:.0f} ns; multi-CPU costs are defaults")
    return replace(prof, fault_entry_ns=round(entry, 1), vma_modify_ns=round(vma, 1), source=src)


def calibrate(out: str | None = None) -> tuple[CostProfile, dict[str, float]]:
    m = measure()
    prof = profile_from(m)
    if out:
        prof.save(out)
    return prof, m
