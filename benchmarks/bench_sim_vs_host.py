"""The simulator against the host kernel: 1- and 2-thread page-fault
throughput of one shared mm, measured on this machine and predicted by the
simulator with a profile calibrated on this machine.

Host side: T threads, one anonymous region; each thread ``memset``s its
half through ctypes (the GIL is released, so the faults really run in
parallel in one mm).  The user-space part (the memset of a page already
faulted) is measured too and given to the simulated pft as think time.
Reported: host faults/s, simulated faults/s, and host/sim.

    python benchmarks/bench_sim_vs_host.py [--pages 20000]
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import threading
import time

from specfault.sim import run
from specfault.sim.calibrate import _libc, measure, profile_from

PAGE = 4096


def host_rate(threads: int, pages: int, rounds: int = 5) -> tuple[float, float]:
    """(faults/s, user ns per page) — best of ``rounds``."""
    libc = _libc()
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    memset = ctypes.memset
    best, user = 0.0, float("inf")
    for _ in range(rounds):
        addr = libc.mmap(None, pages * PAGE, prot, flags, -1, 0)
        share = pages // threads

        def work(i: int, base: int = addr, share: int = share) -> None:
            memset(base + i * share * PAGE, 1, share * PAGE)

        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter_ns()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.perf_counter_ns() - t0
        t1 = time.perf_counter_ns()
        memset(addr, 2, pages * PAGE)          # the same stores, no faults
        user = min(user, (time.perf_counter_ns() - t1) / pages)
        libc.munmap(addr, pages * PAGE)
        best = max(best, share * threads / dt * 1e9)
    return best, user


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=20_000)
    a = ap.parse_args()
    prof = profile_from(measure())
    print(f"profile: {prof.source}")
    print(f"{'threads':>7s} {'host faults/s':>14s} {'sim faults/s':>13s} {'host/sim':>9s}")
    for t in (1, 2):
        host, user = host_rate(t, a.pages)
        r = run("pft", "classic", t, profile=prof, faults=a.pages, think_ns=user)
        print(f"{t:7d} {host / 1e6:13.3f}M {r.faults_per_s / 1e6:12.3f}M {host / r.faults_per_s:9.2f}")


if __name__ == "__main__":
    main()
