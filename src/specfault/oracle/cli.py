"""specfault oracle: differential testing of the model against the host kernel.

    specfault oracle [--runs N] [--seed S] [--max-steps K] [--region P] [--jobs J]
                     [--show N] [--no-shrink] [--out DIR] [--max-memory SIZE] [--swap] [--json]
    specfault oracle --replay FILE [--recorded | --swap] [--json]

Run i of a campaign is a random program drawn from Random(f'{seed}:{i}'),
run on this machine's kernel and on the model; everything user space can
see is compared after every step.  The same --seed gives the same programs
on every machine.

Sizes: a run records both sides after every step: about 60 MiB per worker
process plus 2.5 x (16 KiB + 100 B per region page) per step, so
--max-steps 1000 --region 64 needs about 120 MiB per job, and
--max-steps 10000 --region 4096 is refused.  --jobs multiplies it.

Exit codes: 0 every program agreed (known differences allowed, and counted),
1 a divergence (or a host run failed), 2 bad input or no oracle available,
130 interrupted (Ctrl-C: the counts so far are printed, marked partial).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from specfault import cliargs

from . import corpus, hostswap
from .campaign import Oracle, Outcome, campaign
from .compare import format_divergence
from .host import HostUnavailable, check_host
from .model import model_available
from .program import REGION_MAX, ProgramError

MAX_STEPS = 10_000
MAX_JOBS = 64
#: the memory estimate (RSS, measured: see the module docstring)
B_WORKER, B_STEP, B_STEP_PAGE, RSS_FACTOR = 60 << 20, 16 << 10, 100, 2.5
DEFAULTS = {"runs": 200, "seed": 0, "max_steps": 30, "region": 64, "jobs": 1, "show": 3,
            "out": "oracle-divergences"}

EXAMPLES = """examples:
  specfault oracle --runs 2000 --seed 0 --jobs 2      # the README's agreement figure
  specfault oracle --runs 200 --max-steps 8 --json     # short programs, JSON summary
  specfault oracle --replay tests/oracle_corpus/agree-cow-fork-both-sides.json
  specfault oracle --replay FILE --recorded            # against the host result saved in FILE
  specfault oracle --runs 2000 --seed 0 --swap         # with swap on both sides (root)
"""


def _entry_arg(text: str) -> corpus.Entry:
    """--replay FILE: a readable program or corpus entry, checked step by step."""
    raw = cliargs.read_text(text, 16 << 20, "program")
    try:
        entry = corpus.loads(raw, text)
    except (ProgramError, TypeError, ValueError, KeyError) as exc:
        why = str(exc).removeprefix(f"{text}: ")
        raise argparse.ArgumentTypeError(f"{text}: not a valid program: {why}") from None
    if entry.host is not None and not _host_record_ok(entry.host):
        raise argparse.ArgumentTypeError(f"{text}: the recorded host result is malformed")
    return entry


def _host_record_ok(rec: Any) -> bool:
    return (isinstance(rec, dict) and isinstance(rec.get("steps"), list)
            and all(isinstance(s, dict) and "result" in s and "state" in s for s in rec["steps"])
            and (rec.get("error") is None or isinstance(rec.get("error"), str)))


def register(sub: Any) -> None:
    p = sub.add_parser("oracle", help="differential testing against the host Linux kernel",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=cliargs.int_range(1, 10**9), default=None, metavar="N",
                   help="random programs to run (default 200)")
    p.add_argument("--seed", type=cliargs.seed, default=None, help="seed; run i uses Random(f'{seed}:{i}') "
                                                                   "(default 0)")
    p.add_argument("--max-steps", type=cliargs.int_range(1, MAX_STEPS), default=None, metavar="K",
                   help=f"longest program, 1..{MAX_STEPS:,} (default 30)")
    p.add_argument("--region", type=cliargs.int_range(8, REGION_MAX), default=None, metavar="P",
                   help=f"region size in pages, 8..{REGION_MAX} (default 64)")
    p.add_argument("--jobs", type=cliargs.int_range(1, MAX_JOBS), default=None, metavar="J",
                   help=f"parallel worker processes, 1..{MAX_JOBS} (default 1)")
    p.add_argument("--show", type=cliargs.int_range(0, 100), default=None, metavar="N",
                   help="divergences to shrink and print, 0..100 (default 3)")
    p.add_argument("--no-shrink", action="store_true", help="print divergences as found")
    p.add_argument("--out", type=cliargs.writable_dir, default=None, metavar="DIR",
                   help="directory for minimised diverging programs (default ./oracle-divergences)")
    p.add_argument("--max-memory", type=cliargs.size, default=None, metavar="SIZE",
                   help="refuse a campaign estimated to need more (default: half this machine's "
                        "memory, at most 4G)")
    p.add_argument("--replay", type=_entry_arg, metavar="FILE",
                   help="run one saved program (or corpus entry) on both sides")
    p.add_argument("--recorded", action="store_true",
                   help="with --replay: use the host record saved in the entry, not the live kernel")
    p.add_argument("--swap", action="store_true",
                   help="swap mode: a swap file on the host for the run (root; --jobs 1; other "
                        "users of host swap wait), a swap device as large in the model, and "
                        "the step counters pswpin/pswpout/majflt compared")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=main)


def _err(msg: str) -> int:
    print(f"specfault oracle: {cliargs.one_line(msg)}", file=sys.stderr)
    return 2


def estimate_bytes(max_steps: int, region: int, jobs: int) -> float:
    """RSS of a campaign: each worker (and the parent, which shrinks)."""
    per = B_WORKER + RSS_FACTOR * max_steps * (B_STEP + B_STEP_PAGE * (region + 8))
    return per * (jobs + (1 if jobs > 1 else 0))


def _check_args(args: argparse.Namespace) -> None:
    """Options that do not fit the mode, and the memory estimate."""
    campaign_only = ("runs", "seed", "max_steps", "region", "jobs", "show", "no_shrink", "out",
                     "max_memory")
    if args.replay is not None:
        if args.swap and args.recorded:
            raise cliargs.BadArgument("--swap", "is not used with --recorded (the record is the host's)")
        for dest in campaign_only:
            if getattr(args, dest) not in (None, False):
                raise cliargs.BadArgument("--" + dest.replace("_", "-"), "is not used with --replay")
        return
    if args.recorded:
        raise cliargs.BadArgument("--recorded", "only with --replay FILE")
    for dest, value in DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if args.swap and args.jobs != 1:
        raise cliargs.BadArgument("--jobs", "must be 1 with --swap (host swap counters are system-wide)")
    need = estimate_bytes(args.max_steps, args.region, args.jobs)
    limit = args.max_memory or cliargs.default_memory_limit()
    driver = "--max-steps" if args.max_steps > 1000 or args.jobs == 1 else "--jobs"
    cliargs.check_memory(driver, need, limit, f"--max-steps {args.max_steps} --region {args.region} "
                                              f"with {args.jobs} job(s)")


def main(args: argparse.Namespace) -> int:
    _check_args(args)
    why = model_available()
    if why:
        return _err(f"the model cannot run a process yet ({why})")
    if args.replay is not None and (args.recorded or not args.swap):
        return replay(args)
    try:
        check_host()
    except HostUnavailable as exc:
        return _err(f"no host oracle here: {exc}")
    if not args.swap:
        return run_campaign(args)
    why = hostswap.unavailable()
    if why:
        return _err(f"no host swap here: {why}")
    try:
        with hostswap.HostSwap() as swap:
            args.swap_pages = swap.pages
            return replay(args) if args.replay is not None else run_campaign(args)
    except hostswap.SwapUnavailable as exc:
        return _err(f"no host swap here: {exc}")


def replay(args: argparse.Namespace) -> int:
    entry: corpus.Entry = args.replay
    host_record = None
    if args.recorded:
        if entry.host is None:
            raise cliargs.BadArgument("--recorded", f"{entry.name} has no recorded host result")
        host_record = entry.host
    else:
        try:
            check_host()
        except HostUnavailable as exc:
            if entry.host is None:
                return _err(f"no host oracle here ({exc}) and no recorded host result")
            print(f"note: {exc}; using the recorded host result", file=sys.stderr)
            host_record = entry.host
    oracle = Oracle(swap_pages=getattr(args, "swap_pages", 0))
    try:
        out = oracle.check(entry.program, host_record)
    except KeyboardInterrupt:
        oracle.abort()
        print(f"specfault oracle: {entry.name}: interrupted", file=sys.stderr)
        return 130
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        if host_record is None:
            raise
        return _err(f"{entry.name}: the recorded host result does not fit the program "
                    f"({type(exc).__name__}: {exc})")
    finally:
        oracle.close()
    if args.json:
        print(json.dumps({"program": entry.program.to_json(), "verdict": out.verdict.to_json(),
                          "host": out.host, "model": out.model}))
    else:
        print(f"{entry.name}: {out.verdict.status}"
              + (f" ({out.verdict.known})" if out.verdict.known else ""))
        if out.verdict.status != "agree":
            print(format_divergence(entry.program, out.verdict, out.host, out.model))
    return 0 if out.verdict.status in ("agree", "known") else 1


def _progress(quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = Console(stderr=True)
    return Progress(TextColumn("oracle"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("agree {task.fields[agree]}  diverge {task.fields[diverge]}"
                               "  known {task.fields[known]}"),
                    TimeRemainingColumn(), disable=quiet or not err.is_terminal, transient=False,
                    console=err)


def run_campaign(args: argparse.Namespace) -> int:
    counts = {"agree": 0, "diverge": 0, "known": 0, "host-error": 0}
    known_by: dict[str, int] = {}
    bad: list[Outcome] = []             # the first --show diverging outcomes (kept to shrink)
    diverging: list[int] = []           # every diverging run's number
    host_errors: list[str] = []
    done = 0
    remeasured = 0                      # programs whose host run was taken again
    interrupted = ""
    swap_pages = getattr(args, "swap_pages", 0)
    oracle = Oracle(swap_pages=swap_pages)
    shown: list[tuple[Outcome, Outcome, str]] = []
    runs = campaign(args.runs, args.seed, args.max_steps, args.region, args.jobs,
                    oracle if args.jobs == 1 else None, swap_pages=swap_pages)
    try:
        with _progress(quiet=False) as progress:
            task = progress.add_task("runs", total=args.runs, agree=0, diverge=0, known=0)
            for out in runs:
                v = out.verdict
                counts[v.status] += 1
                done += 1
                remeasured += bool(out.remeasured)
                if v.status == "known" and v.known:
                    known_by[v.known] = known_by.get(v.known, 0) + 1
                if v.status == "diverge":
                    diverging.append(out.run)
                    if len(bad) < args.show:
                        bad.append(out)
                if v.status == "host-error" and len(host_errors) < 5:
                    host_errors.append(f"run {out.run}: {v.message}")
                progress.update(task, advance=1, agree=counts["agree"], diverge=counts["diverge"],
                                known=counts["known"])
        for out in bad:
            small = out if args.no_shrink else oracle.minimise(out)
            if small.verdict.status != "diverge":   # shrinking must not lose it; keep the original
                small = out
            shown.append((out, small, _save(str(args.out), args.seed, small)))
    except KeyboardInterrupt:
        interrupted = (f"interrupted after {done} of {args.runs} runs" if done < args.runs else
                       f"interrupted while shrinking ({len(shown)} of {len(bad)} shrunk)")
        runs.close()
        oracle.abort()
    finally:
        runs.close()
        oracle.close()
    compared = done - counts["host-error"]
    rate = counts["agree"] / compared if compared else 0.0
    if args.json:
        print(json.dumps({
            "runs": args.runs, "done": done, "partial": bool(interrupted), "seed": args.seed,
            "max_steps": args.max_steps, "region": args.region, "swap_pages": swap_pages,
            "counts": counts, "known_differences": known_by, "agreement_rate": rate,
            "remeasured": remeasured,
            "host_errors": host_errors,
            "divergences": [{"run": o.run, "saved": path, "original_steps": len(o.program.steps),
                             "program": s.program.to_json(), "verdict": s.verdict.to_json()}
                            for o, s, path in shown],
            "diverging_runs": diverging}))
    else:
        print(f"programs: {done}{f' of {args.runs} (partial: interrupted)' if interrupted else ''} "
              f"(seed {args.seed}, up to {args.max_steps} steps, region {args.region} pages"
              f"{f', swap {swap_pages} pages' if swap_pages else ''})")
        print(f"agreement: {counts['agree']}/{compared} ({100 * rate:.2f}%)   divergences: "
              f"{counts['diverge']}   known differences: {counts['known']}   host errors: "
              f"{counts['host-error']}")
        if remeasured:
            print(f"  host runs taken again (swap counters disturbed by another process): "
                  f"{remeasured} program(s)")
        for name, n in sorted(known_by.items()):
            print(f"  known difference {name}: {n}")
        for e in host_errors:
            print(f"  host error: {e}")
        if diverging:
            print(f"diverging runs: {', '.join(str(r) for r in diverging[:40])}"
                  + (" ..." if len(diverging) > 40 else ""))
        for o, s, path in shown:
            print()
            print(f"--- run {o.run}: {len(o.program.steps)} steps, minimised to {len(s.program.steps)}")
            print(format_divergence(s.program, s.verdict, s.host, s.model))
            print(f"replay: specfault oracle --replay {path}")
    sys.stdout.flush()
    if interrupted:
        print(f"specfault oracle: {interrupted}", file=sys.stderr)
        return 130
    return 1 if counts["diverge"] or counts["host-error"] else 0


def _save(directory: str, seed: int, out: Outcome) -> str:
    entry = corpus.Entry(name=f"seed{seed}-run{out.run}", program=out.program, host=out.host,
                         note=(format_divergence(out.program, out.verdict).splitlines() or [""])[0],
                         expect="diverge", kernel=corpus.kernel_release())
    try:
        return corpus.save(entry, directory)
    except OSError as exc:
        return f"(not saved: {exc.strerror}) {os.path.join(directory, entry.name + '.json')}"
