"""Sequential anonymous write-fault rate: the model (through the public API)
vs the host kernel's own minor fault, measured side by side in one run.

    python benchmarks/bench_fault.py [--pages N] [--rounds R] [--json]

Each round maps N fresh anonymous pages and writes one byte to each (one
write fault per page), on the host through ctypes and in the model through
``Process.write``; a second pass over the same pages (no faults) measures
the cost of the access path itself on both sides.  Reports medians over
the rounds and the model/kernel ratio, by wall clock and by CPU time
(``process_time``: user + system time of this process, which leaves out
the time the machine gave to other processes — steadier on a shared
machine).  No assertion: figures only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import statistics
import time

import specfault as sf
from specfault.sim.calibrate import _libc

PAGE = 4096


def host_round(n: int) -> tuple[float, float, float]:
    """(s per first touch = minor fault, s per second touch, CPU s per
    first touch) on the host: N fresh anonymous pages, one byte written to
    each through ctypes, twice."""
    libc = _libc()
    addr = libc.mmap(None, n * PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    buf = (ctypes.c_char * (n * PAGE)).from_address(addr)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, n * PAGE, PAGE):
        buf[i] = b"x"
    t1, c1 = time.perf_counter(), time.process_time()
    for i in range(0, n * PAGE, PAGE):
        buf[i] = b"y"
    t2 = time.perf_counter()
    libc.munmap(addr, n * PAGE)
    return (t1 - t0) / n, (t2 - t1) / n, (c1 - c0) / n


def model_round(n: int) -> tuple[float, float, float]:
    m = sf.Machine(nr_frames=n + 64)
    p = m.spawn()
    addr = p.mmap(0, n * PAGE, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    write = p.write
    c0, t0 = time.process_time(), time.perf_counter()
    for a in range(addr, addr + n * PAGE, PAGE):
        write(a, b"x")
    t1, c1 = time.perf_counter(), time.process_time()
    for a in range(addr, addr + n * PAGE, PAGE):
        write(a, b"x")
    t2 = time.perf_counter()
    assert m.vmstat()["pgfault"] == n
    return (t1 - t0) / n, (t2 - t1) / n, (c1 - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    host, model = [], []
    for _ in range(args.rounds):       # interleaved, so noise hits both alike
        host_round(args.pages // 4)    # warm-up: the model round just freed a lot of memory
        host.append(host_round(args.pages))
        model.append(model_round(args.pages))
    h_fault = statistics.median(r[0] for r in host) * 1e6
    h_touch = statistics.median(r[1] for r in host) * 1e6
    m_fault = statistics.median(r[0] for r in model) * 1e6
    m_touch = statistics.median(r[1] for r in model) * 1e6
    h_cpu = statistics.median(r[2] for r in host) * 1e6
    m_cpu = statistics.median(r[2] for r in model) * 1e6
    res = {
        "pages": args.pages, "rounds": args.rounds,
        "host_fault_us": round(h_fault, 3), "host_touch_us": round(h_touch, 3),
        "model_fault_us": round(m_fault, 3), "model_touch_us": round(m_touch, 3),
        "model_faults_per_s": round(1e6 / m_fault), "host_faults_per_s": round(1e6 / h_fault),
        "ratio_fault": round(m_fault / h_fault, 2),
        "host_fault_cpu_us": round(h_cpu, 3), "model_fault_cpu_us": round(m_cpu, 3),
        "ratio_fault_cpu": round(m_cpu / h_cpu, 2),
    }
    if args.json:
        print(json.dumps(res))
        return
    print(f"anonymous write fault, median of {args.rounds} rounds x {args.pages} pages")
    print(f"  host kernel : {h_fault:7.2f} us/fault  ({h_touch:.2f} us/touch without fault)")
    print(f"  model (API) : {m_fault:7.2f} us/fault  ({m_touch:.2f} us/touch without fault)")
    print(f"  ratio model/kernel: {m_fault / h_fault:.1f}x   "
          f"({res['model_faults_per_s']:,} vs {res['host_faults_per_s']:,} faults/s)")
    print(f"  by CPU time  : {m_cpu:.2f} vs {h_cpu:.2f} us/fault, ratio {m_cpu / h_cpu:.1f}x")


if __name__ == "__main__":
    main()
