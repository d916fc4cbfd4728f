"""The fuzzer against every mutant: which it kills, after how many
programs and schedules, with what (shrunk) program — beside the
hand-written scenarios' portfolio (``specfault check --mutants``).

    python benchmarks/fuzz_kill_table.py [--programs 48] [--schedules-per-program 300]
        [--seed 0] [--jobs 2] [--mutants a,b] [--shrink-candidates 300] [--save DIR]
        [--json FILE] [--no-scenarios]

Budgets are programs and schedules, so the table is the same on every
machine (``--jobs`` changes only the time).  The ``fuzz CPU s`` column is
the CPU time of the fuzz run until the kill or the budget (this process
and its workers; shrinking apart): what the run costs whatever else the
machine runs — 120 CPU seconds is a minute on 2 cores.  Prints a Markdown table
(docs/fuzz.md) and, with --save, writes each kill as a regression file.
Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from specfault.check.fuzz.loop import fuzz
from specfault.check.fuzz.regress import Regression
from specfault.check.fuzz.run import FuzzConfig, run_program, shrink
from specfault.check.mutants import MUTANTS
from specfault.check.portfolio import kill


def _cpu() -> float:
    """CPU seconds of this process and its finished workers (the figure
    that does not depend on what else the machine runs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=48)
    ap.add_argument("--schedules-per-program", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--mutants", default="")
    ap.add_argument("--shrink-candidates", type=int, default=300,
                    help="at most this many smaller programs tried per kill")
    ap.add_argument("--save", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-scenarios", action="store_true", help="skip the scenario portfolio column")
    args = ap.parse_args()
    names = args.mutants.split(",") if args.mutants else list(MUTANTS)
    rows = []
    print("| mutant | protocol | fuzz | programs | schedules | fuzz CPU s | violation | shrunk program | "
          "scenarios: schedules (race) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        m = MUTANTS[name]
        cfg = FuzzConfig((m.protocol,), name, args.schedules_per_program, args.seed)
        t0, c0 = time.monotonic(), _cpu()
        out = fuzz(cfg, programs=args.programs, jobs=args.jobs)
        cpu = _cpu() - c0
        row: dict[str, object] = {"mutant": name, "protocol": m.protocol, "killed": not out.ok,
                                  "programs": out.programs, "schedules": out.schedules,
                                  "coverage": len(out.coverage),
                                  "fuzz_seconds": round(out.elapsed, 1),
                                  "fuzz_cpu_seconds": round(cpu, 1), "seconds": 0.0}
        if out.failure is not None:
            small = shrink(out.failure, cfg, max_candidates=args.shrink_candidates)
            reg = Regression(small.program, m.protocol, name, small.choices, out.failure.kind,
                             small.message)
            # the same program under the correct protocol: a failure there
            # is the model's (or a property's), not the mutant's
            plain = run_program(small.program, FuzzConfig((m.protocol,), None,
                                                          args.schedules_per_program, args.seed))
            row.update(kind=out.failure.kind, program=small.program.text(),
                       found=out.failure.program.text(), replay=reg.replay_command(),
                       message=small.message, correct_fails=not plain.ok)
            if args.save and plain.ok:
                reg.save(args.save)
        row["seconds"] = round(time.monotonic() - t0, 1)
        if not args.no_scenarios:
            k = kill(name, minimize=False)
            row.update(scenario_schedules=k.schedules, scenario=k.scenario, scenario_killed=k.killed)
        rows.append(row)
        # (a program's text has " | " between its parts: escaped for the table)
        prog = "`{}`".format(str(row["program"]).replace("|", "\\|")) if row["killed"] else ""
        scen = (f"{row['scenario_schedules']:,} ({row['scenario']})"
                if not args.no_scenarios else "")
        verdict = "killed" if row["killed"] else "survived"
        if row.get("correct_fails"):
            verdict = "model bug (fails without the mutant too)"
        print(f"| {name} | {m.protocol} | {verdict} | "
              f"{out.programs} | {out.schedules:,} | {cpu:.0f} | {row.get('kind', '')} | "
              f"{prog} | {scen} |",
              flush=True)
    killed = sum(1 for r in rows if r["killed"] and not r.get("correct_fails"))
    print(f"\n{killed} of {len(rows)} mutants killed; {args.programs} programs of "
          f"{args.schedules_per_program} schedules at most, seed {args.seed}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
