"""The command line's memory estimates beside measured peak RSS.

``specfault bench`` and ``specfault oracle`` refuse a run whose estimated
memory exceeds ``--max-memory``; ``specfault check`` bounds ``--step-limit``
by its cost per step.  This runs a few sizes of each in a fresh process and
prints the peak RSS it reached (ru_maxrss, minus the interpreter's after the
imports) beside the estimate, so the estimates can be checked on any
machine.

    python benchmarks/bench_cli_memory.py [--quick]

Prints a table; does not assert.  ``--quick`` skips the points that take
more than a few seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

CHILD = r"""
import json, resource, sys
kind, spec = sys.argv[1], json.loads(sys.argv[2])
if kind == "bench":
    from specfault.sim.bench import run
    from specfault.sim.cli import estimate_bytes, B_BASE
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    run(spec["workload"], "speculative", spec["cpus"], **spec["params"])
    est = estimate_bytes(spec["workload"], spec["cpus"], spec["params"])[0] - B_BASE
elif kind == "oracle":
    from specfault.oracle.campaign import Oracle, program_for
    from specfault.oracle.cli import estimate_bytes, B_WORKER
    o = Oracle()
    o.check(program_for(0, 0, 3, 64))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for run in range(3):
        o.check(program_for(0, run, spec["max_steps"], spec["region"]))
    o.close()
    est = estimate_bytes(spec["max_steps"], spec["region"], 1) - B_WORKER
else:
    sys.path.insert(0, spec["dir"])
    from specfault.check.explore import explore
    from specfault.check.scenario import lookup
    sc = lookup("spinning:scenario")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    explore(sc, strategy="dfs", max_schedules=1, budget_seconds=None, step_limit=spec["steps"],
            minimize=False)
    est = 1024 * spec["steps"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"measured": peak - base, "estimate": est}))
"""

SPINNING = """
from specfault.check.scenario import Scenario, Thread
from specfault.runtime import KObject, Load, Store
class S(KObject):
    x = 0
async def reader(s):
    while True:
        await Load(s, "x")
async def writer(s):
    while True:
        await Store(s, "x", 1)
scenario = Scenario("spinning", lambda env: S(), [Thread("r", reader), Thread("w", writer)], rcu=False)
"""


def points(quick: bool) -> list[tuple[str, str, dict[str, object]]]:
    pts: list[tuple[str, str, dict[str, object]]] = [
        ("bench", "pft 20k faults, 64 CPUs", {"workload": "pft", "cpus": 64, "params": {"faults": 20000}}),
        ("bench", "page_fault2 20k faults, 64 CPUs",
         {"workload": "page_fault2", "cpus": 64, "params": {"faults": 20000}}),
        ("bench", "spf_test 20k faults, 64 CPUs", {"workload": "spf_test", "cpus": 64,
                                                    "params": {"faults": 20000}}),
        ("bench", "app_launch free_frac=0.006, 16 CPUs",
         {"workload": "app_launch", "cpus": 16, "params": {"faults": 6000, "free_frac": 0.006}}),
        ("oracle", "oracle 30 steps, region 64", {"max_steps": 30, "region": 64}),
        ("check", "check: a 100,000-step livelock", {"steps": 100_000}),
    ]
    if not quick:
        pts += [
            ("bench", "pft 100k faults, 64 CPUs", {"workload": "pft", "cpus": 64,
                                                   "params": {"faults": 100000}}),
            ("oracle", "oracle 300 steps, region 1024", {"max_steps": 300, "region": 1024}),
            ("check", "check: a 1,000,000-step livelock", {"steps": 1_000_000}),
        ]
    return pts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the points that take seconds")
    args = ap.parse_args()
    import os
    import tempfile

    tmp = tempfile.mkdtemp()
    Path(tmp, "spinning.py").write_text(SPINNING)
    env = dict(os.environ, PYTHONPATH=SRC)
    print(f"{'what':40} {'measured MiB':>13} {'estimate MiB':>13} {'ratio':>6}")
    for kind, what, spec in points(args.quick):
        if kind == "check":
            spec = dict(spec, dir=tmp)
        r = subprocess.run([sys.executable, "-c", CHILD, kind, json.dumps(spec)], capture_output=True,
                           text=True, env=env)
        if r.returncode != 0:
            print(f"{what:40} failed: {r.stderr.strip().splitlines()[-1]}")
            continue
        d = json.loads(r.stdout)
        m, e = d["measured"] / 2**20, d["estimate"] / 2**20
        print(f"{what:40} {m:13.1f} {e:13.1f} {e / m if m else float('inf'):6.2f}")


if __name__ == "__main__":
    main()
