"""``specfault check``: explore scenarios' interleavings; replay a schedule.

    specfault check [SCENARIO ...] [--strategy dfs|random|pct] [--budget SEC]
                    [--schedules N] [--preemptions P|none] [--reduction auto|sleep|none]
                    [--seed S] [--pct-depth D] [--step-limit N] [--json]
    specfault check --replay 'SCENARIO:STRATEGY:SEED:CHOICES' [--json]
    specfault check --list

The memory-manager races (``--list-scenarios``) run under a fault protocol
and optionally a mutant (``--list-mutants``):

    specfault check [--protocol classic|speculative|pervma|dufour|all]
                    [--scenario NAME|all] [--mutant NAME] [--strategy ...]
    specfault check --mutants [--budget 60s] [--save DIR]   # the kill table

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

from specfault.check.explore import STRATEGIES, ExploreConfig, explore, replay
from specfault.check.report import failure_report
from specfault.check.scenario import lookup, registered
from specfault.check.schedule import Schedule, ScheduleError
from specfault.report.outputs import html_file, trace_file


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="explore thread interleavings; replay a failing schedule",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario names or globs")
    p.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "replay"], default=None)
    p.add_argument("--budget", type=_seconds, default=None,
                   help="seconds per scenario, e.g. 30 or 30s (default 10; --mutants: 60 per mutant)")
    p.add_argument("--protocol", default=None,
                   help="fault protocol for --scenario/--mutant: classic, speculative, pervma, "
                        "dufour, or all (default: all; with --mutant, the mutant's own)")
    p.add_argument("--scenario", default=None, metavar="NAME",
                   help="a memory-manager race (see --list-scenarios), or 'all'")
    p.add_argument("--mutant", default=None, metavar="NAME",
                   help="run with this mutant's knobs (see --list-mutants)")
    p.add_argument("--mutants", action="store_true",
                   help="hunt every mutant with the default portfolio; print the kill table")
    p.add_argument("--save", metavar="DIR", default=None,
                   help="with --mutants: write each kill's schedule to DIR/<mutant>.schedule")
    p.add_argument("--list-scenarios", action="store_true", help="list the memory-manager races")
    p.add_argument("--list-mutants", action="store_true",
                   help="list the mutants and what each breaks")
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
    p.add_argument("--trace", type=trace_file, default=None, metavar="FILE.json",
                   help="write each counterexample (the failing schedule) as a trace for "
                        "ui.perfetto.dev / chrome://tracing (docs/reports.md)")
    p.add_argument("--html", type=html_file, default=None, metavar="FILE.html",
                   help="write a self-contained HTML report (results, swimlanes, replay commands)")
    p.set_defaults(func=main)


def _seconds(text: str) -> float:
    t = text.strip().lower()
    mult = 1.0
    if t.endswith("ms"):
        t, mult = t[:-2], 0.001
    elif t.endswith("s"):
        t = t[:-1]
    elif t.endswith("m"):
        t, mult = t[:-1], 60.0
    try:
        value = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30 or 30s)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"budget must be positive: {text!r}")
    return value


def _mm_names(args: argparse.Namespace) -> list[str]:
    """Scenario names for --scenario/--protocol/--mutant (ValueError if bad)."""
    from specfault.check.mutants import MUTANTS
    from specfault.check.scenarios import PROTOCOLS, SPEC_BY_NAME, scenario_name

    mutant = args.mutant
    if mutant is not None and mutant not in MUTANTS:
        raise ValueError(f"unknown mutant {mutant!r}; see --list-mutants")
    proto = args.protocol or (MUTANTS[mutant].protocol if mutant else "all")
    protocols = list(PROTOCOLS) if proto == "all" else [proto]
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r}: choose classic, speculative, pervma, dufour or all")
    which = args.scenario or "all"
    specs = list(SPEC_BY_NAME) if which == "all" else [which]
    for s in specs:
        if s not in SPEC_BY_NAME:
            raise ValueError(f"unknown scenario {s!r}; see --list-scenarios")
    return [scenario_name(s, p, mutant) for s in specs for p in protocols
            if p in SPEC_BY_NAME[s].protocols]


def _list_scenarios() -> int:
    from specfault.check.scenarios import SPECS
    for spec in SPECS:
        print(f"{spec.name:26} {spec.description}")
    return 0


def _list_mutants() -> int:
    from specfault.check.mutants import MUTANTS
    for m in MUTANTS.values():
        print(f"{m.name:34} [{m.protocol}] {m.breaks}")
    return 0


def _kill_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from specfault.check.mutants import MUTANTS
    from specfault.check.portfolio import kill, save

    names = [args.mutant] if args.mutant else list(MUTANTS)
    if args.mutant and args.mutant not in MUTANTS:
        return _err(f"unknown mutant {args.mutant!r}; see --list-mutants")
    budget = args.budget or 60.0
    kills = []
    console = Console(stderr=args.json)
    with Progress(console=console, transient=True, disable=args.json) as bar:
        task = bar.add_task("hunting mutants", total=len(names))
        for name in names:
            bar.update(task, description=f"hunting {name}")
            k = kill(name, budget=budget, seed=args.seed or 0)
            kills.append(k)
            if k.killed and args.save:
                save(k, Path(args.save))
            bar.advance(task)
    data = [k.to_json() for k in kills]
    if args.trace or args.html:
        from specfault.report.html import kill_report
        runs = {k.mutant: _replayed(k.schedule) for k in kills if k.killed}
        _outputs(args, runs, lambda: kill_report(kills, data, _command(args), runs))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        t = Table(title="mutant kill table")
        for col in ("mutant", "protocol", "killed by scenario", "strategy", "schedules", "seconds"):
            t.add_column(col)
        for k in kills:
            t.add_row(k.mutant, k.protocol, k.scenario if k.killed else "[red]SURVIVED[/]",
                      k.strategy, str(k.schedules), f"{k.seconds:.1f}")
        console.print(t)
        for k in kills:
            if k.killed:
                console.print(f"[bold]{k.mutant}[/]: {k.violation}\n  replay: specfault check "
                              f"--replay '{k.schedule}'", highlight=False)
    return 0 if all(k.killed for k in kills) else 1


def _command(args: argparse.Namespace) -> str:
    """The command line of this run (for reports and traces)."""
    import shlex

    parts = ["specfault", "check", *args.scenarios] if args.scenarios else ["specfault", "check"]
    for flag in ("scenario", "protocol", "mutant", "strategy", "budget", "schedules", "preemptions",
                 "reduction", "seed", "pct_depth", "step_limit", "replay"):
        v = getattr(args, flag, None)
        if v is not None:
            parts += [f"--{flag.replace('_', '-')}", str(v)]
    for flag in ("mutants", "no_minimize"):
        if getattr(args, flag, False):
            parts.append(f"--{flag.replace('_', '-')}")
    return " ".join(shlex.quote(p) for p in parts)


def _replayed(line: str) -> tuple[Any, Schedule]:
    """(execution, schedule) of a schedule line, run again."""
    sched = Schedule.parse(line)
    return replay(lookup(sched.scenario), sched), sched


def _outputs(args: argparse.Namespace, runs: dict[str, tuple[Any, Any]], report: Any) -> None:
    """Write --trace (one process per counterexample in ``runs``) and
    --html (``report()`` builds it)."""
    if args.trace:
        from specfault.report.perfetto import TraceWriter, write_counterexample

        with TraceWriter(args.trace, metadata={"command": _command(args)}) as w:
            for name, (ex, sched) in runs.items():
                write_counterexample(w, ex, sched, f"counterexample: {name}")
        print(f"trace written to {args.trace} ({len(runs)} counterexample(s))", file=sys.stderr)
    if args.html:
        report().write(args.html)
        print(f"HTML report written to {args.html}", file=sys.stderr)


def _err(msg: str) -> int:
    print(f"specfault check: {msg}", file=sys.stderr)
    return 2


def _config(args: argparse.Namespace) -> ExploreConfig:
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
    return ExploreConfig.from_env(**over)


def _replay(args: argparse.Namespace) -> int:
    try:
        sched = Schedule.parse(args.replay)
        scenario = lookup(sched.scenario)
        ex = replay(scenario, sched, step_limit=_config(args).step_limit)
    except (ScheduleError, KeyError, ValueError) as exc:
        return _err(str(exc))
    data = {"schedule": str(sched), "steps": ex.steps, "preemptions": ex.preemptions,
            "failure": None if ex.failure is None else
            {"kind": ex.failure.kind, "message": ex.failure.message},
            "trace": ex.trace_lines()}
    if args.trace or args.html:
        from specfault.report.html import replay_report
        _outputs(args, {sched.scenario: (ex, sched)}, lambda: replay_report(ex, sched, data))
    if args.json:
        print(json.dumps(data, indent=2))
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
    if args.list_scenarios:
        return _list_scenarios()
    if args.list_mutants:
        return _list_mutants()
    if args.replay:
        return _replay(args)
    if args.mutants:
        return _kill_table(args)
    if args.scenario or args.mutant or args.protocol:
        if args.scenarios:
            return _err("give either SCENARIO names or --scenario/--protocol/--mutant, not both")
        try:
            args.scenarios = _mm_names(args)
        except ValueError as exc:
            return _err(str(exc))
    if not args.scenarios:
        return _err("name a scenario (see --list, --list-scenarios), or --replay a schedule")
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
    data = [r.to_json() for r in results]
    if args.trace or args.html:
        from specfault.report.html import check_report
        runs = {r.scenario: (r.execution, r.schedule) for r in results
                if not r.ok and r.execution is not None and r.schedule is not None}
        _outputs(args, runs, lambda: check_report(results, data, _command(args), runs))
    if args.json:
        print(json.dumps(data, indent=2))
    return code
