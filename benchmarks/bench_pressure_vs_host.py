"""The seed's case, simulated and measured: an mmap writer beside a thread
that faults through more memory than it has.

Simulator: ``specfault.sim`` workload ``pressure`` (one faulting thread, a
region of ``--sim-faults / passes`` pages written twice over, memory holding
``limit`` of it, swap for the rest; one mmap/munmap writer), for classic,
speculative, pervma and dufour on 2 CPUs, at each memory limit.  Printed:
the writer's mmap+munmap p50/p99, the fault p50/p99, direct-reclaim entries
and swap-ins.

Host (``--host``, root): ``bench_pressure_host.py`` — the same two threads on
this machine's kernel (per-VMA locks) in a memory cgroup with a swap file —
and the ratio host/sim of the writer's p99 against the simulator's
``pervma`` at the same limit.  ``--costs`` first calibrates the simulator
on this host (``specfault calibrate``'s profile: fault, mmap+munmap,
clear/copy page) and measures what it charges for reclaim and swap
(MADV_PAGEOUT of anonymous and of clean file pages, a swap-in), and runs
the simulator with that profile.

    python benchmarks/bench_pressure_vs_host.py [--limits 2,1,0.75,0.5,0.25]
        [--sim-faults 8192] [--host] [--costs] [--json] [--plot FILE.png]

Budgets are in faults (simulated time is deterministic); only the host's
figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_pressure_host import Setup, _fractions, _positive, host_rows  # noqa: E402

from specfault.sim import run  # noqa: E402
from specfault.sim.cost import CostProfile  # noqa: E402

PROTOCOLS = ("classic", "speculative", "pervma", "dufour")

COSTS_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
static long now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000L+t.tv_nsec;}
int main(int argc, char **argv)
{
    long n = atol(argv[1]), sum = 0, in = 0;
    cpu_set_t s;
    CPU_ZERO(&s); CPU_SET(0, &s); sched_setaffinity(0, sizeof s, &s);  /* MADV_PAGEOUT drains this CPU's LRU batch */
    char *a = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long i = 0; i < n; i++) a[i * 4096] = (char)(i | 1);
    long t0 = now(); madvise(a, n * 4096, MADV_PAGEOUT); long t1 = now();
    for (long k = 0; k < n; k++) { long i = (k * 7919) % n, t = now(); sum += a[i * 4096]; in += now() - t; }
    int fd = open(argv[2], O_RDONLY);
    char *f = mmap(NULL, n * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    for (long i = 0; i < n; i++) sum += f[i * 4096];
    long t2 = now(); madvise(f, n * 4096, MADV_PAGEOUT); long t3 = now();
    printf("{\"anon_pageout_ns\": %.0f, \"swap_in_ns\": %.0f, \"file_pageout_ns\": %.0f, \"x\": %ld}\n",
           (double)(t1 - t0) / n, (double)in / n, (double)(t3 - t2) / n, sum & 1);
    return 0;
}
"""


def host_costs(pages: int = 8192) -> dict[str, float]:
    """Per-page reclaim and swap costs on this host (root: a swap file)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, binary, data = Path(tmp) / "c.c", Path(tmp) / "c", Path(tmp) / "data"
        src.write_text(COSTS_C)
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(src)], check=True)
        data.write_bytes(b"x" * pages * 4096)
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("1")
        with Setup(Path(tmp), pages // 256 * 2 + 64):
            out = subprocess.run([str(binary), str(pages), str(data)], check=True,
                                 capture_output=True, text=True).stdout
    got: dict[str, float] = json.loads(out)
    got.pop("x")
    return got


def profile_for(costs: dict[str, float] | None) -> CostProfile:
    """The default profile; with host ``costs``, the profile ``specfault
    calibrate`` makes on this host (fault, mmap+munmap, clear/copy page)
    with reclaim and swap costs from ``costs``."""
    if costs is None:
        return CostProfile()
    from specfault.sim.calibrate import measure, profile_from
    p = profile_from(measure())
    p.work_ns = {**p.work_ns, "reclaim_scan": costs["file_pageout_ns"] * 2 / 3,
                 "reclaim_unmap": costs["file_pageout_ns"] / 3}
    p.io_ns = {**p.io_ns, "swap_read": costs["swap_in_ns"],
               "swap_write": max(0.0, costs["anon_pageout_ns"] - costs["file_pageout_ns"])}
    p.source = f"{p.source}; reclaim/swap measured on this host: {costs}"
    return p


def sim_rows(limits: list[float], faults: int, profile: CostProfile) -> list[dict[str, Any]]:
    rows = []
    for lim in limits:
        for proto in PROTOCOLS:
            r = run("pressure", proto, 2, profile=profile, faults=faults, limit=lim)
            rows.append({"limit": lim, "protocol": proto,
                         "writer_p50_us": r.writer_lat["p50"], "writer_p99_us": r.writer_lat["p99"],
                         "fault_p50_us": r.fault_lat["p50"], "fault_p99_us": r.fault_lat["p99"],
                         "allocstall": r.counters["allocstall"], "pswpin": r.counters["pswpin"],
                         "pgscan_kswapd": r.counters["pgscan_kswapd"]})
            print(f"sim  limit {lim:5.2f} {proto:12s} writer p50 {rows[-1]['writer_p50_us']:8.1f} us "
                  f"p99 {rows[-1]['writer_p99_us']:8.1f} us | fault p50 {rows[-1]['fault_p50_us']:7.1f} "
                  f"p99 {rows[-1]['fault_p99_us']:7.1f} us | allocstall {rows[-1]['allocstall']} "
                  f"pswpin {rows[-1]['pswpin']}", file=sys.stderr, flush=True)
    return rows


def host_limit_rows(limits: list[float], region_mib: int, passes: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for row in host_rows(limits, region_mib, passes, rounds):
        row = {"limit": row.pop("fraction"), **row}
        rows.append(row)
        print(f"host limit {row['limit']:5.2f} writer p50 {row['writer_p50_ns'] / 1e3:8.1f} us "
              f"p99 {row['writer_p99_ns'] / 1e3:8.1f} us | store p99 {row['touch_p99_ns'] / 1e3:7.1f} us",
              file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limits", type=_fractions, default=[2.0, 1.0, 0.75, 0.5, 0.25])
    ap.add_argument("--sim-faults", type=_positive(1 << 22), default=8192)
    ap.add_argument("--host", action="store_true", help="also measure the host (root)")
    ap.add_argument("--costs", action="store_true", help="measure reclaim/swap costs on the host (root)")
    ap.add_argument("--region-mib", type=_positive(4096), default=32)
    ap.add_argument("--rounds", type=_positive(100), default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", metavar="FILE.png")
    a = ap.parse_args()
    try:
        costs = host_costs() if a.costs else None
        if costs:
            print(f"host costs: {costs}", file=sys.stderr)
        sim = sim_rows(a.limits, a.sim_faults, profile_for(costs))
        host = host_limit_rows(a.limits, a.region_mib, 2, a.rounds) if a.host else []
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    ratios = []
    for h in host:
        s = next(r for r in sim if r["limit"] == h["limit"] and r["protocol"] == "pervma")
        ratios.append({"limit": h["limit"], "host_writer_p99_us": h["writer_p99_ns"] / 1e3,
                       "sim_pervma_writer_p99_us": s["writer_p99_us"],
                       "host/sim": h["writer_p99_ns"] / 1e3 / s["writer_p99_us"]})
    if a.json:
        print(json.dumps({"costs": costs, "sim": sim, "host": host, "ratios": ratios}, indent=1))
    else:
        print(f"{'limit':>6s} " + " ".join(f"{p + ' p99':>17s}" for p in PROTOCOLS) + "   (writer mmap+munmap, us)")
        for lim in a.limits:
            cells = [next(r for r in sim if r["limit"] == lim and r["protocol"] == p) for p in PROTOCOLS]
            print(f"{lim:6.2f} " + " ".join(f"{c['writer_p99_us']:17.1f}" for c in cells))
        for r in ratios:
            print(f"limit {r['limit']:5.2f}: host p99 {r['host_writer_p99_us']:7.1f} us, sim pervma "
                  f"{r['sim_pervma_writer_p99_us']:7.1f} us, host/sim {r['host/sim']:.2f}")
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for p in PROTOCOLS:
            pts = [r for r in sim if r["protocol"] == p]
            ax.plot([r["limit"] for r in pts], [r["writer_p99_us"] for r in pts], "o-", label=f"sim {p}")
        if host:
            ax.plot([h["limit"] for h in host], [h["writer_p99_ns"] / 1e3 for h in host], "k--s",
                    label="host (6.18, per-VMA locks)")
        ax.set_xlabel("memory / region (lower: more pressure)")
        ax.set_ylabel("mmap+munmap p99 (us)")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_title("An mmap writer beside a fault under reclaim (2 CPUs)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
