"""Simulator speed: the 64-CPU, 100,000-fault pft comparison of all three
protocols (DESIGN.md target: under a minute on one core).  Prints the time
per protocol and the figures; asserts nothing about wall time.

    python benchmarks/bench_sim.py [--faults 100000] [--cpus 64] [--repeat N]

Times are wall-clock (``cpu`` is this process's CPU time: on a shared
machine the steadier of the two).  With ``--repeat N`` each protocol runs
N times and the medians are printed (the simulated figures are the same
every time: the run is deterministic).
"""

from __future__ import annotations

import argparse
import statistics
import time

from specfault.sim import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faults", type=int, default=100_000)
    ap.add_argument("--cpus", type=int, default=64)
    ap.add_argument("--workload", default="pft")
    ap.add_argument("--repeat", type=int, default=1, help="runs per protocol (medians printed)")
    a = ap.parse_args()
    total = total_cpu = 0.0
    for proto in ("classic", "speculative", "pervma"):
        walls: list[float] = []
        cpus: list[float] = []
        for _ in range(max(1, a.repeat)):
            t0, c0 = time.perf_counter(), time.process_time()
            r = run(a.workload, proto, a.cpus, faults=a.faults)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        dt, cpu = statistics.median(walls), statistics.median(cpus)
        total += dt
        total_cpu += cpu
        print(f"{proto:12s} {dt:6.2f} s (cpu {cpu:6.2f} s)  {r.steps / dt / 1e3:6.0f}k ops/s  "
              f"{dt / max(1, r.faults) * 1e6:5.1f} µs/fault  -> {r.faults_per_s / 1e6:6.2f}M faults/s "
              f"simulated, abort rate {r.abort_rate * 100:.2f}%")
    med = f" (medians of {a.repeat})" if a.repeat > 1 else ""
    print(f"total {total:.2f} s (cpu {total_cpu:.2f} s) for {a.cpus} CPUs x {a.faults} faults "
          f"x 3 protocols{med}")


if __name__ == "__main__":
    main()
