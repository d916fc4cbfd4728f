"""Schedules each strategy needs to find the textbook bugs of
``specfault.check.examples`` (the public checker API), side by side.

    python benchmarks/bench_checker_examples.py [--budget 10000] [--seed 0] [--strategies ...]

For every broken program: the schedules the default portfolio
(``check.api.find_bug``) ran until the first violation, and the same for
each single strategy (random walk, PCT depth 3, DFS bounded at 2
preemptions, and any other registered strategy named with --strategies),
each with the same budget; ``-`` = not found within the budget.  For every
correct program: exhaustive verification where the pair is marked so, else
the portfolio's budget.  Budgets are schedules, so the figures are the same
on every machine; the seconds column is this machine's.
"""

from __future__ import annotations

import argparse
import time

from specfault.check.api import explore, verify
from specfault.check.examples import CASES

SINGLE = (("random", {}), ("pct", {"pct_depth": 3}), ("dfs", {"max_preemptions": 2}))
LABEL = {"random": "random walk", "pct": "PCT d=3", "dfs": "DFS ≤2 preemptions"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--correct", action="store_true", help="also check the correct programs")
    ap.add_argument("--seeds", type=int, default=1,
                    help="also run the portfolio with seeds 0..N-1: the most schedules any needed")
    args = ap.parse_args()
    heads = ["program", "the bug", "threads", "found as", "portfolio",
             *(LABEL[n] for n, _ in SINGLE)]
    if args.seeds > 1:
        heads.append(f"portfolio, worst of {args.seeds} seeds")
    heads.append("s")
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for case in CASES:
        correct, broken = case.programs()
        t = time.perf_counter()
        res = explore(broken, args.budget, seed=args.seed, minimize=False)
        secs = time.perf_counter() - t
        cells = [f"`{case.name}`", case.bug, str(case.threads), res.failure.kind if res.failure else "-",
                 f"{res.schedules:,}" if not res.ok else "-"]
        for name, kw in SINGLE:
            r = explore(broken, args.budget, strategy=name, seed=args.seed, minimize=False, **kw)
            cells.append(f"{r.schedules:,}" if not r.ok else "-")
        if args.seeds > 1:
            runs = [explore(broken, args.budget, seed=s, minimize=False) for s in range(args.seeds)]
            worst = max(r.schedules for r in runs)
            cells.append(f"{worst:,}" + ("" if all(not r.ok for r in runs) else " (missed)"))
        cells.append(f"{secs:.2f}")
        print("| " + " | ".join(cells) + " |", flush=True)
    if args.correct:
        print()
        print("| correct program | threads | how | schedules | verdict | s |")
        print("|---|---|---|---|---|---|")
        seen = set()
        for case in CASES:
            correct, _ = case.programs()
            if correct.name in seen:
                continue
            seen.add(correct.name)
            t = time.perf_counter()
            if case.exhaustive:
                r = verify(correct, None)
                how = "exhaustive (dfs + sleep sets)"
            else:
                r = explore(correct, args.budget, seed=args.seed)
                how = f"portfolio, {args.budget:,}"
            verdict = "ok" if r.ok else f"FAIL {r.failure.kind if r.failure else ''}"
            if r.exhausted:
                verdict += ", exhausted"
            print(f"| `{correct.name.rpartition('.')[2]}` | {case.threads} | {how} | {r.schedules:,} | "
                  f"{verdict} | {time.perf_counter() - t:.1f} |", flush=True)


if __name__ == "__main__":
    main()
