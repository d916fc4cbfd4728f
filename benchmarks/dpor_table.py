"""The exhaustive verification table: every mm race × protocol under DPOR, beside bounded DFS.

For each registered race scenario under each protocol it runs under:

* ``dpor`` (source-set DPOR with sleep sets, no preemption bound) until the
  search is exhausted or the schedule budget ``--schedules`` ends it;
* ``dfs`` bounded at two preemptions (the portfolio's exhaustive leg), same
  budget;

and prints one row per pair: schedules run (complete + sleep-set blocked),
whether the search was exhaustive, and seconds, for each.  Budgets are in
schedules (the same rows on any machine); seconds are this machine's.  A
pair the budget cuts short says ``budget`` instead of ``yes`` — it is not
verified.  ``--cap SECONDS`` adds a time cap per run (then the row depends
on the machine's speed and says ``time cap``).

    python benchmarks/dpor_table.py [--schedules 200000] [--cap SECONDS]
        [--scenario NAME[,NAME...]] [--protocol P[,P...]] [--no-dfs] [--json]
    python benchmarks/dpor_table.py --mutants [--schedules N] [--json]

``--mutants``: DPOR alone against every named mutant, on the mutant's own
scenarios (the ones the portfolio hunts it on first), in turn until one
kills it: which scenario, after how many schedules.  A reduction that
dropped a needed interleaving (a footprint too small) would show here as a
survivor.

The same verification from the command line (one line per pair):

    specfault check --scenario all --protocol all --strategy dpor --schedules 200000

Ctrl-C prints the rows so far (exit 130).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from specfault.check.explore import ExploreConfig, Result, explore
from specfault.check.scenarios import PROTOCOLS, SPEC_BY_NAME, SPECS, build


def _run(spec: str, protocol: str, cfg: ExploreConfig) -> Result:
    return explore(build(spec, protocol), cfg)


def _scope(r: Result) -> str:
    if not r.ok:
        return "FAIL"
    if r.exhausted:
        return "yes"
    return "time cap" if r.capped else "budget"


def _cell(r: dict[str, Any] | None) -> tuple[str, str, str]:
    if r is None:
        return ("-", "-", "-")
    return (f"{r['schedules']:,}", r["exhaustive"], f"{r['seconds']:.1f}")


def _row(r: Result) -> dict[str, Any]:
    return {"schedules": r.schedules, "complete": r.complete, "pruned": r.pruned,
            "exhaustive": _scope(r), "ok": r.ok, "seconds": round(r.elapsed, 2),
            "failure": None if r.failure is None else r.failure.headline(),
            "replay": None if r.schedule is None else r.schedule.replay_command()}


def _mutants(args: argparse.Namespace) -> int:
    from specfault.check.mutants import MUTANTS

    cfg = ExploreConfig(strategy="dpor", max_schedules=args.schedules, budget_seconds=args.cap,
                        minimize=False)
    rows: list[dict[str, Any]] = []
    try:
        for m in MUTANTS.values():
            row: dict[str, Any] = {"mutant": m.name, "protocol": m.protocol, "killed": False,
                                   "scenario": None, "schedules": 0, "seconds": 0.0}
            for spec in m.scenarios:
                r = explore(build(spec, m.protocol, m.name), cfg)
                row["schedules"] += r.schedules
                row["seconds"] = round(row["seconds"] + r.elapsed, 2)
                if not r.ok:
                    row.update(killed=True, scenario=spec, failure=r.failure.headline() if r.failure else "")
                    break
            rows.append(row)
            print(f"{m.name}: {'killed on ' + row['scenario'] if row['killed'] else 'SURVIVED'} "
                  f"({row['schedules']:,} schedules, {row['seconds']:.1f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(json.dumps(rows, indent=2) if args.json else "interrupted")
        return 130
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| mutant | protocol | killed on | DPOR schedules | s |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['mutant']} | {r['protocol']} | {r['scenario'] or 'SURVIVED'} | "
                  f"{r['schedules']:,} | {r['seconds']:.1f} |")
        print(f"\n{sum(r['killed'] for r in rows)} of {len(rows)} mutants killed by DPOR alone, "
              f"budget {args.schedules:,} schedules a scenario")
    return 0 if all(r["killed"] for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schedules", type=int, default=200_000,
                    help="budget per run, in schedules (default 200,000)")
    ap.add_argument("--cap", type=float, default=None, help="time cap per run, seconds (default none)")
    ap.add_argument("--scenario", default=None, help="comma-separated race names (default all)")
    ap.add_argument("--protocol", default=None, help="comma-separated protocols (default all)")
    ap.add_argument("--no-dfs", action="store_true", help="DPOR only (skip the bounded DFS column)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--mutants", action="store_true",
                    help="DPOR against every named mutant on its own scenarios")
    args = ap.parse_args(argv)
    if not 1 <= args.schedules <= 10**9:
        ap.error("--schedules: 1..10^9")
    if args.cap is not None and not args.cap > 0:
        ap.error("--cap: seconds > 0")
    if args.mutants:
        return _mutants(args)
    specs = [s.name for s in SPECS] if args.scenario is None else args.scenario.split(",")
    protos = list(PROTOCOLS) if args.protocol is None else args.protocol.split(",")
    for s in specs:
        if s not in SPEC_BY_NAME:
            ap.error(f"--scenario: unknown race {s!r}")
    for p in protos:
        if p not in PROTOCOLS:
            ap.error(f"--protocol: unknown protocol {p!r}")
    pairs = [(s, p) for s in specs for p in protos if p in SPEC_BY_NAME[s].protocols]
    dpor_cfg = ExploreConfig(strategy="dpor", max_schedules=args.schedules, budget_seconds=args.cap,
                             minimize=False)
    dfs_cfg = ExploreConfig(strategy="dfs", max_preemptions=2, max_schedules=args.schedules,
                            budget_seconds=args.cap, minimize=False)
    rows: list[dict[str, Any]] = []
    start = time.monotonic()
    interrupted = False
    try:
        for k, (s, p) in enumerate(pairs):
            print(f"[{k + 1}/{len(pairs)}] {s}@{p} ...", file=sys.stderr, flush=True)
            row: dict[str, Any] = {"scenario": s, "protocol": p,
                                   "threads": len(SPEC_BY_NAME[s].threads)}
            row["dpor"] = _row(_run(s, p, dpor_cfg))
            row["dfs2"] = None if args.no_dfs else _row(_run(s, p, dfs_cfg))
            rows.append(row)
            print(f"    dpor {_cell(row['dpor'])}  dfs<=2 {_cell(row['dfs2'])}", file=sys.stderr,
                  flush=True)
    except KeyboardInterrupt:
        interrupted = True
    total = time.monotonic() - start
    if args.json:
        print(json.dumps({"schedules_budget": args.schedules, "cap_seconds": args.cap,
                          "seconds": round(total, 1), "interrupted": interrupted, "rows": rows},
                         indent=2))
    else:
        print("| race | protocol | threads | DPOR schedules | exhaustive | s | DFS ≤2 schedules "
              "| exhaustive | s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            d, f = _cell(row["dpor"]), _cell(row["dfs2"])
            print(f"| {row['scenario']} | {row['protocol']} | {row['threads']} | {d[0]} | {d[1]} | "
                  f"{d[2]} | {f[0]} | {f[1]} | {f[2]} |")
        done = sum(1 for r in rows if r["dpor"]["exhaustive"] == "yes")
        failed = [f"{r['scenario']}@{r['protocol']}" for r in rows if not r["dpor"]["ok"]]
        print(f"\nDPOR exhaustive on {done} of {len(rows)} pairs"
              f"{' (interrupted)' if interrupted else ''}; budget {args.schedules:,} schedules a "
              f"run{'' if args.cap is None else f', cap {args.cap:g} s'}; {total:.0f} s in all")
        if failed:
            print("violations: " + ", ".join(failed))
    return 130 if interrupted else 0 if all(r["dpor"]["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
