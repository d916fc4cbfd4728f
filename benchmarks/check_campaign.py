"""The long verification campaign behind issue 5's closing note.

For every race scenario under every protocol: exhaustive DFS up to two
preemptions (within a time budget); where that does not finish, random and
PCT schedules until at least ``--schedules`` ran.  Figures, not asserts:
prints one line per (scenario, protocol) and a JSON summary.

    python benchmarks/check_campaign.py [--dfs-budget 120] [--schedules 100000] [--jobs 2]
        [--protocols dufour,...] [--scenarios fault-vs-munmap,...]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

from specfault.check.explore import ExploreConfig, explore
from specfault.check.scenarios import PROTOCOLS, SPECS, build


def run_one(args: tuple[str, str, float, int]) -> dict[str, object]:
    spec, protocol, dfs_budget, want = args
    t0 = time.monotonic()
    dfs = explore(build(spec, protocol), ExploreConfig(strategy="dfs", max_preemptions=2,
                                                budget_seconds=dfs_budget))
    out: dict[str, object] = {"scenario": spec, "protocol": protocol, "dfs_schedules": dfs.schedules,
                              "dfs_exhausted": dfs.exhausted, "ok": dfs.ok, "random_pct": 0}
    if dfs.ok and not dfs.exhausted:
        done, seed = 0, 1
        while done < want:
            for strategy in ("random", "pct"):
                n = min(5000, want - done)
                if n <= 0:
                    break
                res = explore(build(spec, protocol), ExploreConfig(strategy=strategy, max_schedules=n,
                                                            budget_seconds=None, seed=seed,
                                                            minimize=False))
                done += res.schedules
                seed += n
                if not res.ok:
                    out["ok"] = False
                    out["failure"] = res.report
                    done = want
                    break
        out["random_pct"] = done
    elif not dfs.ok:
        out["failure"] = dfs.report
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dfs-budget", type=float, default=120.0)
    ap.add_argument("--schedules", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated (default all)")
    ap.add_argument("--scenarios", default="", help="comma-separated scenario names (default all)")
    a = ap.parse_args()
    protocols = [p for p in a.protocols.split(",") if p]
    wanted = {s for s in a.scenarios.split(",") if s}
    work = [(s.name, p, a.dfs_budget, a.schedules) for s in SPECS for p in protocols
            if p in s.protocols and (not wanted or s.name in wanted)]
    results = []
    with ProcessPoolExecutor(a.jobs) as pool:
        for r in pool.map(run_one, work):
            results.append(r)
            how = (f"exhaustive ({r['dfs_schedules']} schedules)" if r["dfs_exhausted"]
                   else f"dfs {r['dfs_schedules']} + random/pct {r['random_pct']}")
            print(f"{r['protocol']:12} {r['scenario']:26} {'OK ' if r['ok'] else 'FAIL'} {how} "
                  f"{r['seconds']}s", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    bad = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(bad)}/{len(results)} passed")


if __name__ == "__main__":
    main()
