"""A campaign in one process and in N: the same output, and the wall-time ratio.

    python benchmarks/bench_campaign.py                       # the kill table, 1 vs 2 processes
    python benchmarks/bench_campaign.py --jobs 4 -- --scenario all --protocol all --preemptions 1

Runs ``specfault check ARGS`` once serially and once with ``--jobs N``
(the serial run first, one after the other), checks that both print the
same thing apart from the elapsed-time figures, and prints wall time, CPU
time (the command and its workers) and the ratio, beside the machine's
load average before each run: on a shared machine the ratio depends on
what else runs.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
#: what differs between two runs of the same command: times and rates
_TIMES = re.compile(r"\d+(\.\d+)?\s?s\b|\(\d+/s\)|\d+\.\d+s")


def run(argv: list[str]) -> tuple[float, float, str, int]:
    """(wall s, CPU s of the command and its children, stdout, exit code)."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "specfault.cli", "check", *argv], capture_output=True,
                       text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout, r.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2, help="worker processes of the second run (default 2)")
    p.add_argument("args", nargs="*", help="specfault check arguments (default: --mutants)")
    a = p.parse_args()
    argv = a.args or ["--mutants"]
    rows = []
    outs = []
    for label, extra in (("1 process", []), (f"--jobs {a.jobs}", ["--jobs", str(a.jobs)])):
        load = os.getloadavg()[0]
        wall, cpu, out, code = run([*argv, *extra])
        rows.append((label, wall, cpu, load, code))
        outs.append(_TIMES.sub("T", out))
    same = outs[0] == outs[1]
    print(f"specfault check {' '.join(argv)}")
    print(f"{'run':12} {'wall s':>8} {'CPU s':>8} {'load before':>12} {'exit':>5}")
    for label, wall, cpu, load, code in rows:
        print(f"{label:12} {wall:8.1f} {cpu:8.1f} {load:12.1f} {code:5}")
    print(f"wall-time ratio (1 process / --jobs {a.jobs}): {rows[0][1] / rows[1][1]:.2f}")
    print(f"same output (times aside): {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
