"""``specfault check``: explore scenarios' interleavings; replay a schedule.

    specfault check [SCENARIO ...] [--strategy dfs|random|pct] [--budget SEC]
                    [--schedules N] [--preemptions P|none] [--reduction auto|sleep|none]
                    [--seed S] [--pct-depth D] [--step-limit N] [--json]
    specfault check --replay 'SCENARIO:STRATEGY:SEED:CHOICES' [--json]
    specfault check --list

SCENARIO is a registered name (``--list``; globs like 'litmus.*' work) or
``module:attr``.  Exit codes: 0 no violation, 1 a violation (report printed:
property, swimlane, schedule, replay command), 2 bad input.  Every option's
default can be set as SPECFAULT_CHECK_<FIELD> in the environment.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from typing import Any

from specfault.check.explore import STRATEGIES, Config, explore, replay
from specfault.check.report import failure_report
from specfault.check.scenario import lookup, registered
from specfault.check.schedule import Schedule, ScheduleError


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="explore thread interleavings; replay a failing schedule",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario names or globs")
    p.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "replay"], default=None)
    p.add_argument("--budget", type=float, default=None, help="seconds per scenario (default 10)")
    p.add_argument("--schedules", type=int, default=None, help="at most this many schedules")
    p.add_argument("--preemptions", default=None, help="dfs preemption bound, or 'none' (default 2)")
    p.add_argument("--reduction", choices=["auto", "sleep", "none"], default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--pct-depth", type=int, default=None)
    p.add_argument("--step-limit", type=int, default=None)
    p.add_argument("--no-minimize", action="store_true", help="report the failing schedule as found")
    p.add_argument("--replay", metavar="SCHEDULE", help="run one schedule line exactly")
    p.add_argument("--list", action="store_true", help="list registered scenarios")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=main)


def _err(msg: str) -> int:
    print(f"specfault check: {msg}", file=sys.stderr)
    return 2


def _config(args: argparse.Namespace) -> Config:
    over: dict[str, Any] = {}
    if args.strategy is not None:
        over["strategy"] = args.strategy
    if args.budget is not None:
        over["budget_seconds"] = args.budget
    if args.schedules is not None:
        over["max_schedules"] = args.schedules
    if args.preemptions is not None:
        over["max_preemptions"] = None if args.preemptions == "none" else int(args.preemptions)
    if args.reduction is not None:
        over["reduction"] = args.reduction
    if args.seed is not None:
        over["seed"] = args.seed
    if args.pct_depth is not None:
        over["pct_depth"] = args.pct_depth
    if args.step_limit is not None:
        over["step_limit"] = args.step_limit
    if args.no_minimize:
        over["minimize"] = False
    return Config.from_env(**over)


def _replay(args: argparse.Namespace) -> int:
    try:
        sched = Schedule.parse(args.replay)
        scenario = lookup(sched.scenario)
        ex = replay(scenario, sched, step_limit=_config(args).step_limit)
    except (ScheduleError, KeyError, ValueError) as exc:
        return _err(str(exc))
    if args.json:
        print(json.dumps({"schedule": str(sched), "steps": ex.steps, "preemptions": ex.preemptions,
                          "failure": None if ex.failure is None else
                          {"kind": ex.failure.kind, "message": ex.failure.message},
                          "trace": ex.trace_lines()}, indent=2))
    elif ex.failure is not None:
        print(failure_report(ex, sched))
    else:
        print(f"{sched.scenario}: no violation in {ex.steps} steps ({ex.preemptions} preemptions)")
        for line in ex.trace_lines():
            print(f"  {line}")
    return 1 if ex.failure is not None else 0


def main(args: argparse.Namespace) -> int:
    if args.list:
        for name in registered():
            print(name)
        return 0
    if args.replay:
        return _replay(args)
    if not args.scenarios:
        return _err("name a scenario (see --list), or --replay a schedule")
    try:
        cfg = _config(args)
    except ValueError as exc:
        return _err(str(exc))
    names: list[str] = []
    known = registered()
    for pat in args.scenarios:
        hits = fnmatch.filter(known, pat) if any(ch in pat for ch in "*?[") else [pat]
        if not hits:
            return _err(f"no scenario matches {pat!r}")
        names.extend(hits)
    results = []
    code = 0
    for name in names:
        try:
            scenario = lookup(name)
            res = explore(scenario, cfg)
        except (KeyError, ValueError, ScheduleError) as exc:
            return _err(str(exc))
        results.append(res)
        if not res.ok:
            code = 1
        if not args.json:
            print(res.summary())
            if not res.ok:
                print(res.report)
                print()
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    return code
