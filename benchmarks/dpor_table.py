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
        [--scenario NAME[,NAME...]] [--protocol P[,P...]] [--no-dfs | --no-dpor] [--json]
    python benchmarks/dpor_table.py --mutants [--mutant NAME[,NAME...]] [--schedules N] [--json]
    python benchmarks/dpor_table.py --profile N [--scenario ...] [--protocol ...] [--json]
    python benchmarks/dpor_table.py --litmus     # docs/explorer.md's table of the reductions
    python benchmarks/dpor_table.py --render A.json [B.err ...]   # the table of saved runs
        (--json outputs, or the progress logs of runs cut short; a pair given
        twice takes each column from the last file that has it)

``--profile N``: the race profile of each pair: DPOR's first ``N``
executions, the share of them abandoned as sleep-set blocked, and which
kinds of steps (the first word of each op's description: ``up_read``,
``rcu callback``, ``store``...) the races it reverses come from — every
reversal step 2 of ``check/dpor.py`` tries (``Dpor._insert``), counted by
the pair of kinds, most frequent first.  It tells a footprint still too
coarse (races between steps that commute) from real classes (each order of
two critical sections is a different execution).

``--litmus``: every correct litmus program searched exhaustively without a
bound three ways — no reduction, sleep sets (unbounded ``dfs``), DPOR —
with the schedules each ran (complete, and all runs including the
sleep-set blocked ones).

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


def _survived(row: dict[str, Any]) -> str:
    """A survivor, and whether every search of it was exhausted (then DPOR
    found no failure in any class) or cut short (by the budget or the cap)."""
    return "SURVIVED (exhausted)" if row["exhausted"] else "SURVIVED (cut short)"


def _mutants(args: argparse.Namespace) -> int:
    from specfault.check.mutants import MUTANTS

    cfg = ExploreConfig(strategy="dpor", max_schedules=args.schedules, budget_seconds=args.cap,
                        minimize=False)
    rows: list[dict[str, Any]] = []
    try:
        names = list(MUTANTS) if args.mutant is None else args.mutant.split(",")
        for m in (MUTANTS[n] for n in names):
            row: dict[str, Any] = {"mutant": m.name, "protocol": m.protocol, "killed": False,
                                   "scenario": None, "schedules": 0, "seconds": 0.0,
                                   "exhausted": True}
            for spec in m.scenarios:
                r = explore(build(spec, m.protocol, m.name), cfg)
                row["exhausted"] = row["exhausted"] and r.exhausted
                row["schedules"] += r.schedules
                row["seconds"] = round(row["seconds"] + r.elapsed, 2)
                if not r.ok:
                    row.update(killed=True, scenario=spec, failure=r.failure.headline() if r.failure else "")
                    break
            rows.append(row)
            print(f"{m.name}: {'killed on ' + row['scenario'] if row['killed'] else _survived(row)} "
                  f"({row['schedules']:,} schedules, {row['seconds']:.1f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(json.dumps(rows, indent=2) if args.json else "interrupted")
        return 130
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| mutant | protocol | killed on | DPOR schedules | s |")
        print("|---|---|---|---|---|")
        for done in rows:
            print(f"| {done['mutant']} | {done['protocol']} | {done['scenario'] or _survived(done)} | "
                  f"{done['schedules']:,} | {done['seconds']:.1f} |")
        print(f"\n{sum(done['killed'] for done in rows)} of {len(rows)} mutants killed by DPOR "
              f"alone, budget {args.schedules:,} schedules a scenario")
    return 0 if all(done["killed"] for done in rows) else 1


def _kind(ex: Any, actor: int) -> str:
    if actor == ex.rcu_actor:
        return "rcu callback"
    op = ex.tasks[actor].pending
    return "?" if op is None else op.describe().split(" ", 1)[0]


def race_profile(spec: str, protocol: str, executions: int) -> dict[str, Any]:
    """DPOR's first ``executions`` on the pair: how many ended sleep-set
    blocked, and the races it reversed by the kinds of their two steps."""
    from collections import Counter

    from specfault.check.dpor import Dpor
    from specfault.check.engine import STOP, Execution

    class Profiled(Dpor):
        def __init__(self) -> None:
            super().__init__()
            self.kinds: list[str] = []
            self.profile: Counter[tuple[str, str]] = Counter()

        def next(self) -> Any:
            nxt = super().next()
            if nxt is None:
                return None
            seed, choose = nxt
            kinds: list[str] = []
            self.kinds = kinds

            def profiled(ex: Execution, enabled: list[int]) -> int:
                a = choose(ex, enabled)
                if a is not STOP:
                    kinds.append(_kind(ex, a))
                return a
            return seed, profiled

        def _insert(self, i: int, j: int) -> bool:
            self.profile[(self.kinds[i], self.kinds[j])] += 1
            return super()._insert(i, j)

    sc = build(spec, protocol)
    strat = Profiled()
    n = 0
    while n < executions and (nxt := strat.next()) is not None:
        strat.done_with(Execution(sc).run(nxt[1]))
        n += 1
    total = sum(strat.profile.values())
    return {"scenario": spec, "protocol": protocol, "executions": n, "pruned": strat.pruned,
            "exhausted": strat.exhausted(), "reversals": total,
            "races": [[f"{a} ↔ {b}", c] for (a, b), c in strat.profile.most_common(12)]}


def _profiles(pairs: list[tuple[str, str]], executions: int, as_json: bool) -> int:
    rows = []
    try:
        for s, p in pairs:
            row = race_profile(s, p, executions)
            rows.append(row)
            if not as_json:
                top = ", ".join(f"{k} {c}" for k, c in row["races"])
                print(f"{s}@{p}: {row['executions']} executions"
                      f"{' (exhausted)' if row['exhausted'] else ''}, {row['pruned']} sleep-set "
                      f"blocked; {row['reversals']} reversals: {top}", flush=True)
    except KeyboardInterrupt:
        if as_json:
            print(json.dumps(rows, indent=2))
        return 130
    if as_json:
        print(json.dumps(rows, indent=2))
    return 0


def _litmus() -> int:
    from specfault.check import lookup
    from specfault.check.litmus import LITMUS_PAIRS

    print("| scenario | no reduction | sleep sets | DPOR |")
    print("|---|---|---|---|")
    for name in (good for good, _ in LITMUS_PAIRS):
        cells = []
        for kw in ({"max_preemptions": None, "reduction": "none"},
                   {"max_preemptions": None, "reduction": "sleep"}, {"strategy": "dpor"}):
            r = explore(lookup(name), budget_seconds=None, minimize=False, **kw)
            if not (r.ok and r.exhausted):
                print(f"{name}: {kw}: not exhausted or failed", file=sys.stderr)
                return 1
            cells.append(f"{r.complete:,}" if "reduction" in kw and kw["reduction"] == "none"
                         else f"{r.complete:,} ({r.schedules:,} runs)")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--render"]:
        return render(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schedules", type=int, default=200_000,
                    help="budget per run, in schedules (default 200,000)")
    ap.add_argument("--cap", type=float, default=None, help="time cap per run, seconds (default none)")
    ap.add_argument("--scenario", default=None, help="comma-separated race names (default all)")
    ap.add_argument("--protocol", default=None, help="comma-separated protocols (default all)")
    ap.add_argument("--no-dfs", action="store_true", help="DPOR only (skip the bounded DFS column)")
    ap.add_argument("--no-dpor", action="store_true",
                    help="bounded DFS only (skip the DPOR column; --render merges the two)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--mutants", action="store_true",
                    help="DPOR against every named mutant on its own scenarios")
    ap.add_argument("--mutant", default=None,
                    help="with --mutants: comma-separated mutant names (default all)")
    ap.add_argument("--litmus", action="store_true",
                    help="the litmus programs: no reduction, sleep sets, DPOR")
    ap.add_argument("--profile", type=int, default=None, metavar="N",
                    help="the race profile of each pair over DPOR's first N executions")
    args = ap.parse_args(argv)
    if not 1 <= args.schedules <= 10**9:
        ap.error("--schedules: 1..10^9")
    if args.cap is not None and not args.cap > 0:
        ap.error("--cap: seconds > 0")
    if args.profile is not None and not 1 <= args.profile <= 10**6:
        ap.error("--profile: executions 1..10^6")
    if args.no_dfs and args.no_dpor:
        ap.error("--no-dpor: not with --no-dfs (nothing would run)")
    if args.mutant is not None:
        from specfault.check.mutants import MUTANTS

        if not args.mutants:
            ap.error("--mutant: only with --mutants")
        for n in args.mutant.split(","):
            if n not in MUTANTS:
                ap.error(f"--mutant: unknown mutant {n!r}")
    if args.mutants:
        return _mutants(args)
    if args.litmus:
        return _litmus()
    specs = [s.name for s in SPECS] if args.scenario is None else args.scenario.split(",")
    protos = list(PROTOCOLS) if args.protocol is None else args.protocol.split(",")
    for s in specs:
        if s not in SPEC_BY_NAME:
            ap.error(f"--scenario: unknown race {s!r}")
    for p in protos:
        if p not in PROTOCOLS:
            ap.error(f"--protocol: unknown protocol {p!r}")
    pairs = [(s, p) for s in specs for p in protos if p in SPEC_BY_NAME[s].protocols]
    if args.profile is not None:
        return _profiles(pairs, args.profile, args.json)
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
            row["dpor"] = None if args.no_dpor else _row(_run(s, p, dpor_cfg))
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
        _table(rows, args.schedules, args.cap, total, interrupted)
    return 130 if interrupted else 0 if all(_ok(r) for r in rows) else 1


def _ok(row: dict[str, Any]) -> bool:
    return all(c is None or c["ok"] for c in (row["dpor"], row["dfs2"]))


def _table(rows: list[dict[str, Any]], budget: int, cap: float | None, total: float,
           interrupted: bool) -> None:
    print("| race | protocol | threads | DPOR schedules | exhaustive | s | DFS ≤2 schedules "
          "| exhaustive | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        d, f = _cell(row["dpor"]), _cell(row["dfs2"])
        print(f"| {row['scenario']} | {row['protocol']} | {row['threads']} | {d[0]} | {d[1]} | "
              f"{d[2]} | {f[0]} | {f[1]} | {f[2]} |")
    done = sum(1 for r in rows if r["dpor"] is not None and r["dpor"]["exhaustive"] == "yes")
    failed = [f"{r['scenario']}@{r['protocol']}" for r in rows if not _ok(r)]
    what = f"budget {budget:,} schedules a run" if budget else "budgets as run (progress logs)"
    print(f"\nDPOR exhaustive on {done} of {len(rows)} pairs"
          f"{' (cut short)' if interrupted else ''}; {what}"
          f"{'' if cap is None else f', cap {cap:g} s'}; {total:.0f} s in all")
    if failed:
        print("violations: " + ", ".join(failed))


def _from_log(text: str) -> list[dict[str, Any]]:
    """Rows of a progress log: ``[k/n] race@protocol ...`` then
    ``dpor (schedules, exhaustive, s)  dfs<=2 (...)`` per finished pair."""
    import ast
    import re

    rows: list[dict[str, Any]] = []
    pair = None
    for line in text.splitlines():
        m = re.match(r"\[\d+/\d+\] (\S+)@(\S+) \.\.\.", line)
        if m:
            pair = (m.group(1), m.group(2))
            continue
        m = re.match(r"\s+dpor (\(.*?\))  dfs<=2 (\(.*?\))", line)
        if m and pair is not None:
            cells = []
            for cell in (m.group(1), m.group(2)):
                n, ex, sec = ast.literal_eval(cell)
                cells.append(None if n == "-" else {
                    "schedules": int(n.replace(",", "")), "exhaustive": ex, "seconds": float(sec),
                    "ok": ex != "FAIL"})
            rows.append({"scenario": pair[0], "protocol": pair[1],
                         "threads": len(SPEC_BY_NAME[pair[0]].threads), "dpor": cells[0],
                         "dfs2": cells[1]})
            pair = None
    return rows


def render(paths: list[str]) -> int:
    """Print the table of one or more saved ``--json`` outputs (rows in
    the order of the registered races and protocols)."""
    rows: list[dict[str, Any]] = []
    budget, cap, total, interrupted = 0, None, 0.0, False
    for path in paths:
        with open(path) as f:
            text = f.read()
        if not text.lstrip().startswith("{"):      # a progress log (stderr) of a cut run
            got = _from_log(text)
            rows += got
            interrupted = interrupted or bool(got)
            continue
        data = json.loads(text)
        rows += data["rows"]
        budget = max(budget, data["schedules_budget"])
        cap = data["cap_seconds"]
        total += data["seconds"]
        interrupted = interrupted or data["interrupted"]
    # a pair given twice: the later file's columns win where it has them
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["scenario"], row["protocol"])
        old = merged.get(key)
        if old is None:
            merged[key] = dict(row)
        else:
            old.update({k: v for k, v in row.items() if v is not None})
    order = {(s.name, p): k for k, (s, p) in enumerate((s, p) for s in SPECS for p in PROTOCOLS)}
    out = sorted(merged.values(), key=lambda r: order[(r["scenario"], r["protocol"])])
    _table(out, budget, cap, total, interrupted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
