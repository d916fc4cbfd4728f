"""Simulator speed: the 64-CPU, 100,000-fault pft comparison of all three
protocols (DESIGN.md target: under a minute on one core).  Prints the time
per protocol and the figures; asserts nothing about wall time.

    python benchmarks/bench_sim.py [--faults 100000] [--cpus 64]
"""

from __future__ import annotations

import argparse
import time

from specfault.sim import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faults", type=int, default=100_000)
    ap.add_argument("--cpus", type=int, default=64)
    ap.add_argument("--workload", default="pft")
    a = ap.parse_args()
    total = 0.0
    for proto in ("classic", "speculative", "pervma"):
        t0 = time.perf_counter()
        r = run(a.workload, proto, a.cpus, faults=a.faults)
        dt = time.perf_counter() - t0
        total += dt
        print(f"{proto:12s} {dt:6.2f} s  {r.steps / dt / 1e3:6.0f}k ops/s  "
              f"{dt / max(1, r.faults) * 1e6:5.1f} µs/fault  -> {r.faults_per_s / 1e6:6.2f}M faults/s "
              f"simulated, abort rate {r.abort_rate * 100:.2f}%")
    print(f"total {total:.2f} s for {a.cpus} CPUs x {a.faults} faults x 3 protocols")


if __name__ == "__main__":
    main()
