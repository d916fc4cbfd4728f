"""specfault check: explore scenarios' interleavings; hunt mutants; replay a schedule.

    specfault check SCENARIO ... [--strategy dfs|ipb|delay|dpor|random|pct] [--schedules N]
                    [--budget SECONDS] [--preemptions P|none] [--reduction auto|sleep|none]
                    [--bound B|none] [--seed S] [--pct-depth D] [--step-limit N]
                    [--no-minimize] [--json]
    specfault check [--scenario NAME|all] [--protocol classic|speculative|pervma|dufour|all]
                    [--mutant NAME] [exploration options as above]
    specfault check --mutants [--mutant NAME] [--schedules N] [--budget SECONDS]
                    [--seed S] [--save DIR] [--json]            # the kill table
    ... [--jobs N | --backend ray [--address HOST:PORT]]        # a campaign (docs/campaigns.md)
    specfault check --replay 'SCENARIO:STRATEGY:SEED:CHOICES' [--step-limit N] [--json]
    specfault check --list | --list-scenarios | --list-mutants

SCENARIO is a registered name (--list; globs like 'litmus.*' work),
module:attr or path/to/file.py:attr (a program written with
specfault.check.api: it runs under the portfolio strategy by default).  The memory-manager races (--list-scenarios) run under a fault
protocol and optionally a mutant (--list-mutants), named
mm.<race>@<protocol>[+<mutant>].

Budgets are schedules, so a run gives the same result on every machine:
--schedules N per scenario (default 10,000; exhaustive DFS stops sooner),
or per mutant with --mutants (default 24,000: 2.3 times what the hungriest
mutant needs).  --budget SECONDS is only a cap; a run it cuts short says
"time cap" (and its result then depends on the machine's speed).

Sizes: a schedule costs about 1 KiB of memory per step while it runs, so
--step-limit is at most 1,000,000 (about 1 GiB); a --replay line expands
to at most 1,000,000 steps, checked before it is expanded.

Campaigns: --jobs N runs the mutants' hunts (one per mutant) or the
scenarios' searches (one per scenario, each exhaustive DFS or random walk
split into pieces by schedule prefix or seed) in N local processes;
--backend ray runs them on Ray (a local instance, or the cluster at
--address).  Results are merged in order, never by completion: the kill
table and the verdicts are those of one process (docs/campaigns.md).

Exit codes: 0 no violation (every mutant killed), 1 a violation (report
printed: property, swimlane, schedule, replay command) or a surviving
mutant, 2 bad input, 130 interrupted (Ctrl-C: the results so far are
printed, the interrupted one marked).  Every exploration option's default
can also be set as SPECFAULT_CHECK_<FIELD> (e.g. SPECFAULT_CHECK_SEED=3).
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import sys
from typing import Any

from specfault import cliargs
from specfault.check.campaign import BACKENDS, MAX_JOBS, Backend, Campaign, CampaignInterrupted
from specfault.check.explore import ExploreConfig, Interrupted, Result, replay
from specfault.check.report import failure_report
from specfault.check.scenario import UnknownScenario, lookup, registered
from specfault.check.schedule import MAX_CHOICES, Schedule, ScheduleError

#: schedules per scenario unless --schedules says otherwise
DEFAULT_SCHEDULES = 10_000
STEP_LIMIT = (1_000, 1_000_000)
PROTOCOL_CHOICES = ("classic", "speculative", "pervma", "dufour", "all")

EXAMPLES = """examples:
  specfault check --list-scenarios                         # the races
  specfault check --scenario fault-vs-munmap --protocol speculative
  specfault check 'litmus.*' --preemptions none            # exhaustive, unbounded preemptions
  specfault check --scenario all --protocol all --strategy dpor   # every race, every schedule class
  specfault check --scenario cow-aba --strategy ipb --bound 3     # fewest preemptions first
  specfault check litmus.rcu-broken --strategy pct --schedules 500 --seed 7
  specfault check specfault.check.examples.ticket:broken    # your own program (check.api)
  specfault check path/to/my_lock.py:broken --schedules 10000
  specfault check --mutants                                # the kill table
  specfault check --mutants --mutant no_seq2_check --save tests/regressions
  specfault check --mutants --jobs 2                       # the same table, two processes
  specfault check --scenario all --protocol all --preemptions 3 --jobs 2
  specfault check --mutants --backend ray --address 10.0.0.1:6379   # on a Ray cluster
  specfault check --replay "$(cat tests/regressions/no_seq2_check.schedule)"
"""


def _scenario_arg(text: str) -> str:
    from specfault.check.scenarios import SPEC_BY_NAME

    if text == "all":
        return text
    return cliargs.choice(SPEC_BY_NAME, "race", ("all",))(text)


def _mutant_arg(text: str) -> str:
    from specfault.check.mutants import MUTANTS

    return cliargs.choice(MUTANTS, "mutant")(text)


#: --schedules none: no schedule budget (exhaustive DFS, the time cap or Ctrl-C end it)
UNBOUNDED = -1


def _schedules(text: str) -> int:
    if text.strip().lower() == "none":
        return UNBOUNDED
    return cliargs.int_range(1, 10**9, "a schedule count (or 'none')")(text)


def _preemptions(text: str) -> int:
    if text.strip().lower() == "none":
        return UNBOUNDED      # not None: None means "not given"
    return cliargs.int_range(0, 1000, "a preemption bound (or 'none')")(text)


def _address(text: str) -> str:
    """A Ray cluster address: HOST:PORT, ray://HOST:PORT or 'auto'."""
    text = text.strip()
    if text == "auto" or (text and not any(c.isspace() for c in text) and ":" in text
                          and text.rsplit(":", 1)[1].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected HOST:PORT, ray://HOST:PORT or 'auto', not {text!r}")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """--backend and --address, as every campaign command takes them
    (checked by :func:`_campaign`)."""
    p.add_argument("--backend", type=cliargs.choice(BACKENDS, "backend"), default=None,
                   help="local (processes on this machine; the default) or ray (pip install "
                        "'specfault[ray]'; see docs/campaigns.md)")
    p.add_argument("--address", type=_address, default=None, metavar="HOST:PORT",
                   help="with --backend ray: the Ray cluster to use (as 'ray start --head' prints "
                        "it, or 'auto'); default: start a local Ray instance")


def _campaign(args: argparse.Namespace) -> dict[str, Any]:
    """--jobs/--backend/--address checked (Ray connected) before any work:
    the keyword arguments of a :class:`~specfault.check.campaign.Campaign`."""
    backend = args.backend or "local"
    if args.address is not None and backend != "ray":
        raise cliargs.BadArgument("--address", "is only used with --backend ray")
    if backend == "ray":
        from specfault.check.campaign import ray_available, ray_init

        if not ray_available():
            raise cliargs.BadArgument("--backend", "ray is not installed: pip install 'specfault[ray]'")
        if args.address not in (None, "auto"):      # Ray itself retries for minutes
            import socket

            host, _, port = args.address.removeprefix("ray://").rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except OSError as exc:
                raise cliargs.BadArgument("--address", f"cannot reach a Ray cluster at {args.address}: "
                                                       f"{exc.strerror or exc}") from None
        try:
            ray_init(args.address)
        except KeyboardInterrupt:
            from specfault.check.campaign import ray_stop

            print("interrupted while starting Ray: nothing done", file=sys.stderr)
            ray_stop(fast=True)
            raise SystemExit(130) from None
        except Exception as exc:                   # noqa: BLE001 - any failure to connect
            where = f"at {args.address}" if args.address else "(a local instance)"
            raise cliargs.BadArgument("--address" if args.address else "--backend",
                                      cliargs.one_line(f"cannot start or reach Ray {where}: {exc}")) from None
    return {"jobs": args.jobs, "backend": backend, "address": args.address}


def _bound(text: str) -> int:
    if text.strip().lower() == "none":
        return UNBOUNDED
    return cliargs.int_range(0, 1000, "a bound (or 'none')")(text)


def _schedule_arg(text: str) -> Schedule:
    """A schedule line, checked before it is expanded; its scenario must exist."""
    if len(text) > 16 * MAX_CHOICES:
        raise argparse.ArgumentTypeError(f"schedule line too long ({len(text):,} characters)")
    try:
        sched = Schedule.parse(text)
    except ScheduleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        lookup(sched.scenario)
    except UnknownScenario as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return sched


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="explore thread interleavings; hunt mutants; replay a schedule",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario names or globs (see --list)")
    p.add_argument("--strategy", choices=_STRATEGIES, default=None,
                   help="dfs (exhaustive, preemption-bounded, fewest preemptions first; the "
                        "default for registered scenarios), ipb (iterative preemption bounding, "
                        "no upper bound), delay (iterative delay bounding), dpor (source-set "
                        "DPOR: every class of schedules, no bound), random, pct, or portfolio "
                        "(several taking turns: the default for programs written with "
                        "specfault.check.api)")
    p.add_argument("--schedules", type=_schedules, default=None, metavar="N",
                   help=f"budget: at most N schedules per scenario (default {DEFAULT_SCHEDULES:,}); "
                        "with --mutants, per mutant (default 24,000); 'none': no budget (an "
                        "exhaustive search, --budget or Ctrl-C ends it)")
    p.add_argument("--budget", type=cliargs.duration, default=None, metavar="SECONDS",
                   help="a time cap per scenario (per mutant with --mutants), e.g. 30 or 30s or 2m; "
                        "default: none")
    p.add_argument("--protocol", type=cliargs.choice(PROTOCOL_CHOICES, "protocol"), default=None,
                   help="fault protocol for --scenario/--mutant: classic, speculative, pervma, "
                        "dufour, or all (default: all; with --mutant, the mutant's own)")
    p.add_argument("--scenario", type=_scenario_arg, default=None, metavar="NAME",
                   help="a memory-manager race (see --list-scenarios), or 'all'")
    p.add_argument("--mutant", type=_mutant_arg, default=None, metavar="NAME",
                   help="run with this mutant's knobs (see --list-mutants); with --mutants, hunt only it")
    p.add_argument("--mutants", action="store_true",
                   help="hunt every mutant of the kill table (those the scenarios kill; --mutant "
                        "hunts any, the fuzzer's too) with the default portfolio; print the table")
    p.add_argument("--save", type=cliargs.writable_dir, metavar="DIR", default=None,
                   help="with --mutants: write each kill's schedule to DIR/<mutant>.schedule")
    p.add_argument("--list-scenarios", action="store_true", help="list the memory-manager races")
    p.add_argument("--list-mutants", action="store_true",
                   help="list the mutants and what each breaks")
    p.add_argument("--preemptions", type=_preemptions, default=None, metavar="P",
                   help="dfs: at most P preemptions per schedule (0..1000), or 'none' (default 2)")
    p.add_argument("--reduction", choices=["auto", "sleep", "none"], default=None,
                   help="dfs: partial-order reduction (default auto: sleep sets when unbounded)")
    p.add_argument("--bound", type=_bound, default=None, metavar="B",
                   help="ipb/delay: stop after bound B (preemptions, delays; 0..1000), or 'none' "
                        "(the default: every bound, until exhausted or the budget ends it)")
    p.add_argument("--seed", type=cliargs.seed, default=None,
                   help="random/pct: seed of the first schedule (default 0)")
    p.add_argument("--pct-depth", type=cliargs.int_range(1, 100), default=None, metavar="D",
                   help="pct: bug depth, 1..100 (default 3)")
    p.add_argument("--step-limit", type=cliargs.int_range(*STEP_LIMIT), default=None, metavar="N",
                   help=f"a schedule longer than N steps is reported as livelock "
                        f"({STEP_LIMIT[0]:,}..{STEP_LIMIT[1]:,}; default 10,000; the built-in "
                        "scenarios run under 300)")
    p.add_argument("--no-minimize", action="store_true", help="report the failing schedule as found")
    p.add_argument("--replay", type=_schedule_arg, metavar="SCHEDULE",
                   help="run one schedule line exactly")
    p.add_argument("--jobs", type=cliargs.int_range(1, MAX_JOBS, "a number of processes"), default=None,
                   metavar="N",
                   help="run the campaign (one hunt per mutant; one search per scenario, split by "
                        "schedule prefix) in N local processes (default 1: this process); with "
                        "--backend ray, at most N units at once (default: the cluster's CPUs)")
    add_backend_args(p)
    p.add_argument("--list", action="store_true", help="list registered scenarios")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--trace", type=cliargs.writable_file(["json"], "trace file"), default=None,
                   metavar="FILE.json",
                   help="write each counterexample (the failing schedule) as a trace for "
                        "ui.perfetto.dev / chrome://tracing (docs/reports.md)")
    p.add_argument("--html", type=cliargs.writable_file(["html", "htm"], "HTML report"), default=None,
                   metavar="FILE.html",
                   help="write a self-contained HTML report (results, swimlanes, replay commands)")
    p.set_defaults(func=main)


#: the options each mode uses (anything else given is refused)
_CAMPAIGN = {"jobs", "backend", "address"}
_EXPLORE = {"strategy", "schedules", "budget", "preemptions", "reduction", "bound", "seed",
            "pct_depth", "step_limit", "no_minimize", "json"} | _CAMPAIGN
#: --strategy's choices
_STRATEGIES = ("dfs", "ipb", "delay", "dpor", "random", "pct", "portfolio")
#: options that only some strategies use (given with another one: refused)
_STRATEGY_OPTIONS = {"preemptions": ("dfs", "random", "pct", "portfolio"),
                     "reduction": ("dfs", "random", "pct", "portfolio"),
                     "bound": ("ipb", "delay")}
_MODES: dict[str, set[str]] = {
    "list": set(), "list_scenarios": set(), "list_mutants": set(),
    "replay": {"step_limit", "json", "trace", "html"},
    "mutants": {"mutant", "schedules", "budget", "seed", "save", "no_minimize", "json", "trace", "html"}
               | _CAMPAIGN,
    "explore": _EXPLORE | {"scenarios", "scenario", "protocol", "mutant", "trace", "html"},
}


def _flag(dest: str) -> str:
    return "SCENARIO" if dest == "scenarios" else "--" + dest.replace("_", "-")


def _mode(args: argparse.Namespace) -> str:
    given = [m for m in ("list", "list_scenarios", "list_mutants", "replay", "mutants")
             if getattr(args, m)]
    if len(given) > 1:
        raise cliargs.BadArgument(_flag(given[1]), f"cannot be combined with {_flag(given[0])}")
    mode = given[0] if given else "explore"
    for dest, value in vars(args).items():
        if dest in ("func", "command", mode) or value is None or value is False or value == []:
            continue
        if dest not in _MODES[mode]:
            what = "exploring scenarios" if mode == "explore" else _flag(mode)
            raise cliargs.BadArgument(_flag(dest), f"is not used with {what}")
    return mode


def _mm_names(args: argparse.Namespace) -> list[str]:
    """Scenario names for --scenario/--protocol/--mutant."""
    from specfault.check.mutants import MUTANTS
    from specfault.check.scenarios import PROTOCOLS, SPEC_BY_NAME, scenario_name

    mutant = args.mutant
    proto = args.protocol or (MUTANTS[mutant].protocol if mutant else "all")
    protocols = list(PROTOCOLS) if proto == "all" else [proto]
    which = args.scenario or "all"
    specs = list(SPEC_BY_NAME) if which == "all" else [which]
    names = [scenario_name(s, p, mutant) for s in specs for p in protocols
             if p in SPEC_BY_NAME[s].protocols]
    if not names:
        raise cliargs.BadArgument("--protocol", f"race {which!r} does not run under {proto}")
    return names


def _resolve(patterns: list[str]) -> list[str]:
    """Every SCENARIO resolved (globs expanded, names looked up) before any runs."""
    known = registered()
    names: list[str] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            hits = fnmatch.filter(known, pat)
            if not hits:
                raise cliargs.BadArgument("SCENARIO", f"no scenario matches {pat!r}; "
                                                      "'specfault check --list' lists them")
            names.extend(hits)
            continue
        try:
            lookup(pat)
        except UnknownScenario as exc:
            raise cliargs.BadArgument("SCENARIO", str(exc)) from None
        names.append(pat)
    return names


def _list_scenarios() -> int:
    from specfault.check.scenarios import SPECS
    for spec in SPECS:
        print(f"{spec.name:26} {spec.description}")
    return 0


def _list_mutants() -> int:
    from specfault.check.mutants import MUTANTS
    for m in MUTANTS.values():
        fuzz = "(the scenarios miss it: for the fuzzer) " if m.expect == "fuzz" else ""
        print(f"{m.name:34} [{m.protocol}] {fuzz}{m.breaks}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line of this run (for reports and traces)."""
    import shlex

    parts = ["specfault", "check", *args.scenarios] if args.scenarios else ["specfault", "check"]
    for flag in ("scenario", "protocol", "mutant", "strategy", "budget", "schedules", "preemptions",
                 "reduction", "bound", "seed", "pct_depth", "step_limit", "replay"):
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


def _config(args: argparse.Namespace) -> ExploreConfig:
    """Defaults (a schedule budget, no time cap), then SPECFAULT_CHECK_*,
    then the command line."""
    over: dict[str, Any] = {}
    if args.strategy is not None:
        over["strategy"] = args.strategy
    if args.budget is not None:
        over["budget_seconds"] = args.budget
    if args.schedules is not None:
        over["max_schedules"] = None if args.schedules == UNBOUNDED else args.schedules
    if args.preemptions is not None:
        over["max_preemptions"] = None if args.preemptions == UNBOUNDED else args.preemptions
    if args.bound is not None:
        over["max_bound"] = None if args.bound == UNBOUNDED else args.bound
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
    try:
        cfg = ExploreConfig.from_env(defaults={"budget_seconds": None, "max_schedules": DEFAULT_SCHEDULES},
                              **over)
    except (ValueError, TypeError) as exc:
        raise cliargs.BadArgument("SPECFAULT_CHECK_*", str(exc)) from None
    _check_env(cfg)
    return cfg


def _check_env(cfg: ExploreConfig) -> None:
    """Values from SPECFAULT_CHECK_* pass the same checks as the options."""
    checks = [("strategy", cfg.strategy in _STRATEGIES, ", ".join(_STRATEGIES)),
              ("reduction", cfg.reduction in ("auto", "sleep", "none"), "auto, sleep or none"),
              ("max_schedules", cfg.max_schedules is None or 1 <= cfg.max_schedules <= 10**9,
               "1..1,000,000,000 or none"),
              ("step_limit", STEP_LIMIT[0] <= cfg.step_limit <= STEP_LIMIT[1],
               f"{STEP_LIMIT[0]:,}..{STEP_LIMIT[1]:,}"),
              ("max_preemptions", cfg.max_preemptions is None or 0 <= cfg.max_preemptions <= 1000,
               "0..1000 or none"),
              ("max_bound", cfg.max_bound is None or 0 <= cfg.max_bound <= 1000, "0..1000 or none"),
              ("seed", 0 <= cfg.seed <= cliargs.SEED_MAX, "0..2**63-1"),
              ("pct_depth", 1 <= cfg.pct_depth <= 100, "1..100"),
              ("budget_seconds", cfg.budget_seconds is None
               or 0 < cfg.budget_seconds <= cliargs.DURATION_MAX, "seconds > 0, or none"),
              ("minimize_runs", 0 <= cfg.minimize_runs <= 100_000, "0..100,000")]
    for name, ok, what in checks:
        if not ok:
            raise cliargs.BadArgument(f"SPECFAULT_CHECK_{name.upper()}",
                                      f"must be {what}, not {getattr(cfg, name)!r}")


def _replay(args: argparse.Namespace) -> int:
    sched: Schedule = args.replay
    cfg = _config(args)
    if len(sched.choices) > cfg.step_limit:
        raise cliargs.BadArgument("--replay", f"the schedule has {len(sched.choices):,} steps, more "
                                              f"than the step limit {cfg.step_limit:,} (--step-limit)")
    scenario = lookup(sched.scenario)
    try:
        ex = replay(scenario, sched, step_limit=cfg.step_limit)
    except ScheduleError as exc:
        raise cliargs.BadArgument("--replay", f"the schedule does not fit {sched.scenario}: {exc}") from None
    except KeyboardInterrupt:
        print(f"{sched.scenario}: replay interrupted", file=sys.stderr)
        return 130
    data = {"schedule": str(sched), "steps": ex.steps, "preemptions": ex.preemptions,
            "failure": None if ex.failure is None else
            {"kind": ex.failure.kind, "message": ex.failure.message},
            "replay": sched.replay_command(), "trace": ex.trace_lines()}
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


def _kill_table(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from specfault.check.mutants import MUTANTS
    from specfault.check.portfolio import DEFAULT_SCHEDULES as PER_MUTANT
    from specfault.check.portfolio import Kill, save
    from specfault.check.split import kill_unit

    # the kill table: the mutants the scenarios kill; one the scenarios miss
    # (expect="fuzz", the fuzzer's input) is hunted when named with --mutant
    names = [args.mutant] if args.mutant else [n for n, m in MUTANTS.items() if m.expect == "scenarios"]
    schedules: float = args.schedules or PER_MUTANT
    if schedules == UNBOUNDED:
        schedules = float("inf")
    campaign = _campaign(args)
    hunt = functools.partial(kill_unit, schedules=schedules, seed=args.seed or 0, minimize=not args.no_minimize,
                             cap_seconds=args.budget)
    kills: list[Kill] = []
    err = Console(stderr=True)
    start = time.monotonic()
    interrupted = False
    try:
        with Progress(console=err, transient=True, disable=args.json or not err.is_terminal) as bar, \
                Campaign(hunt, names, **campaign) as run:
            serial = run.backend.serial
            what = f"hunting {names[0]}" if serial else f"hunting mutants ({run.backend.describe()})"
            task = bar.add_task(what, total=len(names))

            def finished(i: int, k: Kill) -> None:
                if serial and i + 1 < len(names):
                    bar.update(task, description=f"hunting {names[i + 1]}")
                bar.advance(task)

            run.progress = finished
            for _, k in run:            # in the mutants' order, whoever finished first
                kills.append(k)
                run.handed_back(k)
                if k.killed and args.save:
                    save(k, args.save)
    except CampaignInterrupted as exc:  # Ctrl-C: the table so far, the interrupted hunts marked
        for i in exc.running:
            part = exc.partial.get(i)
            exc.done[i] = part if isinstance(part, Kill) else Kill(names[i], MUTANTS[names[i]].protocol,
                                                                    False, interrupted=True)
        if not exc.running and len(exc.done) < len(names):   # between two hunts: the next one
            nxt = min(i for i in range(len(names)) if i not in exc.done)
            exc.done[nxt] = Kill(names[nxt], MUTANTS[names[nxt]].protocol, False, interrupted=True)
        kills = [exc.done[i] for i in sorted(exc.done)]
        if args.save:                   # the kills finished out of order are saved too
            for k in kills:
                if k.killed:
                    save(k, args.save)
        interrupted = True
    data = [k.to_json() for k in kills]
    if (args.trace or args.html) and not interrupted:
        from specfault.report.html import kill_report
        runs = {k.mutant: _replayed(k.schedule) for k in kills if k.killed}
        _outputs(args, runs, lambda: kill_report(kills, data, _command(args), runs))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        # the table may be cut to the terminal's width; the replay commands below never are
        out = Console(highlight=False)
        t = Table(title="mutant kill table" + (" (partial: interrupted)" if interrupted else ""))
        for col in ("mutant", "protocol", "killed by scenario", "strategy", "schedules"):
            t.add_column(col, overflow="fold")
        for k in kills:
            verdict = k.scenario if k.killed else f"[red]{k.verdict().upper()}[/]"
            t.add_row(k.mutant, k.protocol, verdict, k.strategy, f"{k.schedules:,}")
        out.print(t)
        sys.stdout.flush()
        done = [k for k in kills if not k.interrupted]
        budget = "no" if schedules == float("inf") else f"{int(schedules):,}"
        print(f"{sum(k.killed for k in done)} of {len(done)} mutants killed, budget {budget} "
              f"schedules each, seed {args.seed or 0}; {time.monotonic() - start:.1f} s")
        for k in kills:
            if k.killed:
                print(f"{k.mutant}: {k.violation}")
                print(f"  replay: {Schedule.parse(k.schedule).replay_command()}")
    sys.stdout.flush()
    if interrupted:
        done_n = sum(1 for k in kills if not k.interrupted)
        print(f"interrupted: {done_n} of {len(names)} mutants hunted (partial table "
              f"{'on stdout' if args.json else 'above'})", file=sys.stderr)
        _stop_ray(campaign)
        return 130
    return 0 if all(k.killed for k in kills) else 1


def _for_program(sc: Any, args: argparse.Namespace, cfg: ExploreConfig) -> ExploreConfig:
    """A program written with ``specfault.check.api`` runs under the
    portfolio unless a strategy was chosen (--strategy or
    SPECFAULT_CHECK_STRATEGY) or implied (--preemptions, --reduction: dfs;
    --pct-depth: pct)."""
    import os
    from dataclasses import replace

    if "program" not in sc.tags or args.strategy is not None or "SPECFAULT_CHECK_STRATEGY" in os.environ:
        return cfg
    if args.preemptions is not None or args.reduction is not None:
        return cfg                                  # dfs, the configured default
    if args.pct_depth is not None:
        return replace(cfg, strategy="pct")
    return replace(cfg, strategy="portfolio")


def _stop_ray(campaign: dict[str, Any]) -> None:
    """After Ctrl-C: a local Ray instance goes down at once (the tasks were cancelled)."""
    if campaign["backend"] == "ray":
        from specfault.check.campaign import ray_stop

        ray_stop(fast=True)


def _interrupted(args: argparse.Namespace, results: list[Result], names: list[str],
                 campaign: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    done = sum(1 for r in results if not r.interrupted)
    sys.stdout.flush()
    print(f"interrupted: {done} of {len(names)} scenarios done (partial results "
          f"{'on stdout' if args.json else 'above'})", file=sys.stderr)
    _stop_ray(campaign)
    return 130


def _explore_all(args: argparse.Namespace, names: list[str], cfg: ExploreConfig) -> int:
    """Explore each scenario (a campaign: one unit per scenario, in order;
    with several workers, each search split into pieces)."""
    from specfault.check.split import explore_all, explore_unit

    campaign = _campaign(args)
    results: list[Result] = []

    def show(res: Result) -> None:
        if not args.json:
            print(res.summary(), flush=True)
            if not res.ok and res.report:
                print(res.report)
                print(flush=True)

    # programs of check.api run under the portfolio, which is not split
    serial = (campaign["backend"] == "local" and (campaign["jobs"] or 1) == 1) or \
        any("program" in lookup(name).tags for name in names)
    try:
        if serial:
            units = [(name, _for_program(lookup(name), args, cfg)) for name in names]
            with Campaign(explore_unit, units, **campaign) as run:
                for _, res in run:
                    results.append(res)
                    run.handed_back(res)
                    show(res)
        else:                           # each search split into pieces, merged in order
            from rich.console import Console
            from rich.progress import Progress

            err = Console(stderr=True)
            with Progress(console=err, transient=True, disable=args.json or not err.is_terminal) as bar:
                where = Backend(**campaign).describe()
                what = "exploring ({}): {:,} schedules in {:,} pieces"
                task = bar.add_task(what.format(where, 0, 0), total=len(names))
                ran = [0, 0]

                def tick(i: int, n: int) -> None:
                    ran[0] += n
                    ran[1] += 1
                    bar.update(task, description=what.format(where, ran[0], ran[1]))

                split = explore_all(names, cfg, progress=tick, **campaign)
                try:
                    for res in split:
                        results.append(res)
                        bar.advance(task)
                        show(res)
                finally:
                    split.close()               # stops the workers, whatever ended the loop
    except Interrupted as exc:           # Ctrl-C in a split campaign: the scenarios begun, marked
        for res in exc.result[len(results):]:
            results.append(res)
            show(res)
        return _interrupted(args, results, names, campaign)
    except CampaignInterrupted as exc:   # Ctrl-C: what was done, the interrupted ones marked
        for i in exc.running:
            part = exc.partial.get(i)
            exc.done[i] = part if isinstance(part, Result) else Result(
                names[i], cfg.strategy, True, 0, 0, 0, 0, 0.0, False, interrupted=True)
        if not exc.running and len(exc.done) < len(names):   # between two scenarios: the next one
            nxt = min(i for i in range(len(names)) if i not in exc.done)
            exc.done[nxt] = Result(names[nxt], cfg.strategy, True, 0, 0, 0, 0, 0.0, False,
                                   interrupted=True)
        for i in sorted(exc.done):
            if i >= len(results):
                results.append(exc.done[i])
                show(exc.done[i])
        return _interrupted(args, results, names, campaign)
    except KeyboardInterrupt:            # between two results of a split campaign: the next one
        if len(results) < len(names):
            results.append(Result(names[len(results)], cfg.strategy, True, 0, 0, 0, 0, 0.0, False,
                                  interrupted=True))
            show(results[-1])
        return _interrupted(args, results, names, campaign)
    data = [r.to_json() for r in results]
    if args.trace or args.html:
        from specfault.report.html import check_report
        runs = {r.scenario: _replayed(str(r.schedule)) for r in results
                if not r.ok and r.schedule is not None}
        for r in results:
            if r.scenario in runs:
                r.execution = runs[r.scenario][0]
        _outputs(args, runs, lambda: check_report(results, data, _command(args), runs))
    if args.json:
        print(json.dumps(data, indent=2))
    return 0 if all(r.ok for r in results) else 1


def main(args: argparse.Namespace) -> int:
    mode = _mode(args)
    if mode == "list":
        for name in registered():
            print(name)
        return 0
    if mode == "list_scenarios":
        return _list_scenarios()
    if mode == "list_mutants":
        return _list_mutants()
    if mode == "replay":
        return _replay(args)
    if mode == "mutants":
        return _kill_table(args)
    if args.scenario or args.mutant or args.protocol:
        if args.scenarios:
            raise cliargs.BadArgument("SCENARIO", "give either SCENARIO names or "
                                                  "--scenario/--protocol/--mutant, not both")
        names = _mm_names(args)
    elif not args.scenarios:
        raise cliargs.BadArgument("SCENARIO", "name a scenario (see --list, --list-scenarios), "
                                              "or --replay a schedule, or --mutants")
    else:
        names = _resolve(args.scenarios)
    cfg = _config(args)
    for dest, users in _STRATEGY_OPTIONS.items():
        if getattr(args, dest) is not None and cfg.strategy not in users:
            raise cliargs.BadArgument(_flag(dest), f"is not used by strategy {cfg.strategy!r} "
                                                   f"(only by {', '.join(users)})")
    return _explore_all(args, names, cfg)
