"""specfault fuzz: random concurrent programs on the memory manager, explored.

    specfault fuzz [--protocol P|all] [--mutant M] [--programs N] [--budget 60s]
                   [--schedules-per-program K] [--seed S] [--save DIR]
                   [--jobs N | --backend ray [--address HOST:PORT]]
                   [--no-shrink] [--step-limit N] [--json]
    specfault fuzz --replay 'PROGRAM @ PROTOCOL[+MUTANT] @ CHOICES' | FILE.json

Each program (2-4 threads of read/write/exec accesses, mmap, munmap,
mprotect, mremap, madvise, fork and exit over a few pages; see
docs/fuzz.md) is explored under each protocol with the default portfolio
(random walk, PCT, DFS bounded at 2 preemptions; K schedules in all per
program and protocol, default 300) and every execution is checked as the
races of 'specfault check' are.  Programs that reach new coverage
(fault kind x abort reason x writer in flight x lock contended) join the
corpus and are mutated.  A violation is shrunk — program first, then
schedule — printed with one replay line, and saved with --save as a
regression file the test suite replays.

Budgets: --programs N is the deterministic budget: the same seed gives the
same programs, coverage and findings on every machine, with any --jobs and
on Ray (--backend ray: the programs of a batch run as a campaign's units,
docs/campaigns.md).  --budget is a time cap (checked between programs;
between batches of 8 with --jobs or Ray), so how far it gets depends on
the machine.  With neither, the cap is 60 s.  Both: the first reached.

Protocols: --protocol all (the default without --mutant) explores every
program under all four; with --mutant, the mutant's own protocol.

Exit codes (as 'specfault check'): 0 no violation found, 1 a violation
found (with --mutant: the mutant is killed), 2 bad input, 130 interrupted
(Ctrl-C: the results so far are printed).  --replay exits 1 when the
schedule fails, 0 when it does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from specfault import cliargs
from specfault.check.cli import add_backend_args

PROTOCOLS = ("classic", "speculative", "pervma", "dufour")
DEFAULT_SECONDS = 60.0
STEP_LIMIT = (1_000, 1_000_000)

EXAMPLES = """examples:
  specfault fuzz --programs 50 --seed 1                       # every protocol, deterministic
  specfault fuzz --mutant no_seq2_check --programs 200        # hunt a mutant
  specfault fuzz --mutant no_pte_none_recheck --save tests/check/fuzz_regressions
  specfault fuzz --replay tests/check/fuzz_regressions/FILE.json
"""


def _mutant_arg(text: str) -> str:
    from specfault.check.mutants import MUTANTS

    return cliargs.choice(MUTANTS, "mutant")(text)


def _replay_arg(text: str) -> Any:
    """A replay line or a regression file, checked before anything runs."""
    from specfault.check.fuzz.program import ProgramError
    from specfault.check.fuzz.regress import Regression, load

    if len(text) > 1_000_000:
        raise argparse.ArgumentTypeError("replay line too long")
    try:
        if "@" not in text:
            path = Path(text)
            if not path.is_file():
                raise argparse.ArgumentTypeError(
                    f"{text!r} is neither a replay line (PROGRAM @ PROTOCOL[+MUTANT] @ CHOICES) "
                    "nor a regression file")
            if path.stat().st_size > 1 << 20:
                raise argparse.ArgumentTypeError(f"{text} is larger than any regression file")
            return load(path)
        return Regression.parse_line(text)
    except ProgramError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any) -> None:
    p = sub.add_parser("fuzz", help="random concurrent programs on the memory manager, explored",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", type=cliargs.choice((*PROTOCOLS, "all"), "protocol"), default=None,
                   help="classic, speculative, pervma, dufour, or all (default: all; with "
                        "--mutant, the mutant's own)")
    p.add_argument("--mutant", type=_mutant_arg, default=None, metavar="NAME",
                   help="run with this mutant's knobs ('specfault check --list-mutants')")
    p.add_argument("--programs", type=cliargs.int_range(1, 10**6, "a program count"), default=None,
                   metavar="N", help="the deterministic budget: N programs (1..1,000,000)")
    p.add_argument("--budget", type=cliargs.duration, default=None, metavar="SECONDS",
                   help="a time cap, e.g. 60, 60s, 2m (default 60 s when --programs is not given)")
    p.add_argument("--schedules-per-program", type=cliargs.int_range(3, 10**6, "a schedule count"),
                   default=None, metavar="K",
                   help="schedules per program and protocol, split over random walk, PCT and DFS "
                        "(3..1,000,000; default 300)")
    p.add_argument("--seed", type=cliargs.seed, default=None, help="the run's seed (default 0)")
    p.add_argument("--jobs", type=cliargs.int_range(1, 256, "a process count"), default=None,
                   metavar="N", help="explore programs in N worker processes (default 1); with "
                                     "--backend ray, at most N programs at once (default: the "
                                     "cluster's CPUs); the result does not depend on N")
    add_backend_args(p)                         # --backend, --address: the result is the same
    p.add_argument("--save", type=cliargs.writable_dir, default=None, metavar="DIR",
                   help="save a violation as a regression file in DIR")
    p.add_argument("--no-shrink", action="store_true",
                   help="report the failing program and schedule as found")
    p.add_argument("--step-limit", type=cliargs.int_range(*STEP_LIMIT), default=None, metavar="N",
                   help=f"an execution longer than N steps is a livelock ({STEP_LIMIT[0]:,}.."
                        f"{STEP_LIMIT[1]:,}; default 10,000)")
    p.add_argument("--replay", type=_replay_arg, default=None, metavar="LINE|FILE",
                   help="run one finding again: a replay line or a regression file")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=main)


_REPLAY_OK = {"replay", "json", "step_limit"}


def _check_combination(args: argparse.Namespace) -> None:
    if args.replay is not None:
        for dest, value in vars(args).items():
            if dest in ("func", "command") or dest in _REPLAY_OK or value is None or value is False:
                continue
            raise cliargs.BadArgument("--" + dest.replace("_", "-"), "is not used with --replay")


def _report(ex: Any, command: str) -> str:
    from specfault.check.report import swimlane

    f = ex.failure
    who = ""
    if f.actor is not None:
        who = f" at step {f.step - 1} by {ex.actor_name(f.actor)}"
    lines = [f"VIOLATION {f.kind}: {f.message}", f"program {ex.scenario.name!r}{who}"]
    if f.site:
        lines.append(f"model code: {f.site}")
    lines += [f"{ex.steps} steps, {ex.preemptions} preemptions", "", swimlane(ex), "",
              f"replay: {command}"]
    return "\n".join(lines)


def _replay(args: argparse.Namespace) -> int:
    reg = args.replay
    try:
        ex = reg.replay(step_limit=args.step_limit or 10_000)
    except Exception as exc:  # noqa: BLE001 - a schedule that does not fit is bad input
        from specfault.check.schedule import ScheduleError
        if isinstance(exc, ScheduleError):
            raise cliargs.BadArgument("--replay", f"the schedule does not fit the program: {exc}") \
                from None
        raise
    data = {"program": reg.program.text(), "target": reg.target(), "steps": ex.steps,
            "preemptions": ex.preemptions,
            "failure": None if ex.failure is None else
            {"kind": ex.failure.kind, "message": ex.failure.message},
            "replay": reg.replay_command(), "trace": ex.trace_lines()}
    if args.json:
        print(json.dumps(data, indent=2))
    elif ex.failure is not None:
        print(_report(ex, reg.replay_command()))
    else:
        print(f"{ex.scenario.name}: no violation in {ex.steps} steps ({ex.preemptions} preemptions)")
    return 1 if ex.failure is not None else 0


def main(args: argparse.Namespace) -> int:
    _check_combination(args)
    if args.replay is not None:
        return _replay(args)
    from specfault.check.mutants import MUTANTS

    proto = args.protocol or (MUTANTS[args.mutant].protocol if args.mutant else "all")
    protocols = PROTOCOLS if proto == "all" else (proto,)
    seconds = args.budget if args.budget is not None else (
        DEFAULT_SECONDS if args.programs is None else None)
    from specfault.check.fuzz.run import DEFAULT_SCHEDULES, FuzzConfig

    cfg = FuzzConfig(protocols, args.mutant, args.schedules_per_program or DEFAULT_SCHEDULES,
                     args.seed or 0, args.step_limit or 10_000)
    from specfault.check.cli import _campaign

    campaign = _campaign(args)                 # checked (Ray reached) before any work
    rc = _fuzz(args, cfg, args.programs, seconds, campaign)
    if campaign["backend"] == "ray":
        from specfault.check.campaign import ray_stop

        ray_stop(fast=rc == 130)               # after Ctrl-C: at once (the tasks were cancelled)
    return rc


def _fuzz(args: argparse.Namespace, cfg: Any, programs: int | None, seconds: float | None,
          campaign: dict[str, Any]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from specfault.check.explore import Interrupted
    from specfault.check.fuzz.loop import FuzzResult, fuzz

    err = Console(stderr=True)
    total = float(programs) if programs is not None else seconds
    out: FuzzResult
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=args.json or not err.is_terminal) as bar:
        task = bar.add_task("fuzzing", total=total)

        def progress(r: FuzzResult) -> None:
            done = r.programs if programs is not None else min(r.elapsed, seconds or 0.0)
            bar.update(task, completed=done,
                       description=f"fuzzing: {r.programs} programs, {r.schedules:,} schedules, "
                                   f"coverage {len(r.coverage)}, corpus {len(r.corpus)}")

        try:
            out = fuzz(cfg, programs=programs, seconds=seconds, jobs=campaign["jobs"] or 1,
                       progress=progress, backend=campaign["backend"],
                       address=campaign["address"])
        except Interrupted as exc:
            out = exc.result
    finding = None
    if out.failure is not None and not out.interrupted:
        try:
            finding = _finding(args, cfg, out)
        except KeyboardInterrupt:
            out.interrupted = True
    _print(args, out, finding)
    if out.interrupted:
        print(f"interrupted: {out.programs} programs explored (partial results "
              f"{'on stdout' if args.json else 'above'})", file=sys.stderr)
        return 130
    return 1 if out.failure is not None else 0


def _finding(args: argparse.Namespace, cfg: Any, out: Any) -> dict[str, Any]:
    from specfault.check.engine import Execution, replay_chooser
    from specfault.check.fuzz.compile import build
    from specfault.check.fuzz.regress import Regression

    res = out.failure
    if args.no_shrink:
        scen = build(res.program, res.protocol, cfg.mutant)
        ex = Execution(scen, cfg.step_limit).run(replay_chooser(res.choices))
        prog, shrunk = res.program, None
    else:
        from specfault.check.fuzz.run import shrink

        shrunk = shrink(res, cfg)
        assert shrunk.execution is not None
        prog, ex = shrunk.program, shrunk.execution
    assert ex.failure is not None, "the finding no longer fails"
    reg = Regression(prog, res.protocol, cfg.mutant, list(ex.choices), ex.failure.kind,
                     ex.failure.message)
    saved = str(reg.save(args.save)) if args.save else None
    return {"regression": reg, "execution": ex, "saved": saved, "found": res,
            "shrunk": shrunk}


def _print(args: argparse.Namespace, out: Any, finding: dict[str, Any] | None) -> None:
    from specfault.check.fuzz.loop import growth_table, summary_json

    data = summary_json(out)
    if finding is not None:
        reg, res, shrunk = finding["regression"], finding["found"], finding["shrunk"]
        data["violation"] = {
            "kind": reg.kind, "message": reg.message, "protocol": reg.protocol,
            "mutant": reg.mutant, "program_index": out.failure_index,
            "found_program": res.program.text(), "found_strategy": res.strategy,
            "found_schedules": res.schedules, "program": reg.program.text(),
            "shrink": None if shrunk is None else {
                "candidates": shrunk.tried, "schedules": shrunk.schedules,
                "before": list(shrunk.before), "after": list(shrunk.after)},
            "replay": reg.replay_command(), "saved": finding["saved"],
            "regression": reg.to_json()}
    if args.json:
        print(json.dumps(data, indent=2))
        return
    target = "+".join([",".join(out.config.protocols)] + ([out.config.mutant] if out.config.mutant
                                                           else []))
    verdict = "no violation" if out.ok else "VIOLATION"
    if out.interrupted and out.ok:
        verdict = "no violation so far"
    print(f"fuzz {target}: {verdict} — {out.programs} programs, {out.schedules:,} schedules, "
          f"coverage {len(out.coverage)} combinations, corpus {len(out.corpus)}, "
          f"{out.elapsed:.1f} s, stopped by {out.stop_reason()} (seed {out.config.seed}, "
          f"{out.config.schedules} schedules per program and protocol)")
    curve = growth_table(out.growth)
    if curve:
        print("coverage growth (programs -> combinations): "
              + ", ".join(f"{p} -> {c}" for p, c in curve))
    if finding is not None:
        reg, res, shrunk = finding["regression"], finding["found"], finding["shrunk"]
        print(f"found by program #{out.failure_index + 1} ({res.strategy}, {res.schedules} "
              f"schedules): {res.program.text()}")
        if shrunk is not None:
            print(f"shrunk in {shrunk.tried} candidates ({shrunk.schedules:,} schedules) to: "
                  f"{reg.program.text()}")
        print()
        print(_report(finding["execution"], reg.replay_command()))
        if finding["saved"]:
            print(f"saved: {finding['saved']}")
    sys.stdout.flush()
