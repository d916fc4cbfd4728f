"""Oracle throughput: host runner vs model runner on the same random programs.

    python benchmarks/bench_oracle.py [--runs 50] [--seed 0]

Reports seconds per program and per step on each side (no assertions).
"""

from __future__ import annotations

import argparse
import random
import time

from specfault.oracle.gen import random_program
from specfault.oracle.host import HostRunner
from specfault.oracle.model import run_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    progs = [random_program(random.Random(f"{args.seed}:{i}")) for i in range(args.runs)]
    steps = sum(len(p.steps) for p in progs)
    host = HostRunner()
    host.run(progs[0])                      # start the coordinator outside the timing
    t0 = time.perf_counter()
    for p in progs:
        host.run(p)
    t1 = time.perf_counter()
    for p in progs:
        run_model(p)
    t2 = time.perf_counter()
    host.close()
    print(f"{args.runs} programs, {steps} steps")
    print(f"host : {1000 * (t1 - t0) / args.runs:7.1f} ms/program  {1000 * (t1 - t0) / steps:6.2f} ms/step")
    print(f"model: {1000 * (t2 - t1) / args.runs:7.1f} ms/program  {1000 * (t2 - t1) / steps:6.2f} ms/step")


if __name__ == "__main__":
    main()
