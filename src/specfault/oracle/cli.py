"""``specfault oracle``: differential testing of the model against the host kernel.

    specfault oracle --runs N --seed S [--max-steps K] [--region P] [--jobs J] [--json]
    specfault oracle --replay FILE [--recorded] [--json]

Exit codes: 0 every program agreed (known differences allowed, and counted),
1 a divergence (or a host run failed), 2 bad input or no oracle available.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import corpus
from .campaign import Oracle, Outcome, campaign
from .compare import format_divergence
from .host import HostUnavailable, check_host
from .model import model_available
from .program import ProgramError


def register(sub: Any) -> None:
    p = sub.add_parser("oracle", help="differential testing against the host Linux kernel",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200, help="random programs to run (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed; run i uses Random(f'{seed}:{i}')")
    p.add_argument("--max-steps", type=int, default=30, help="longest program (default 30)")
    p.add_argument("--region", type=int, default=64, help="region size in pages (default 64)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--show", type=int, default=3, help="divergences to shrink and print (default 3)")
    p.add_argument("--no-shrink", action="store_true", help="print divergences as found")
    p.add_argument("--out", default="oracle-divergences",
                   help="directory for minimised diverging programs (default ./oracle-divergences)")
    p.add_argument("--replay", metavar="FILE", help="run one saved program (or corpus entry) on both sides")
    p.add_argument("--recorded", action="store_true",
                   help="with --replay: use the host record saved in the entry, not the live kernel")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=main)


def _err(msg: str) -> int:
    print(f"specfault oracle: {msg}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    if args.runs < 0 or args.max_steps < 1 or args.region < 8 or args.jobs < 1 or args.show < 0:
        return _err("--runs >= 0, --max-steps >= 1, --region >= 8, --jobs >= 1, --show >= 0")
    why = model_available()
    if why:
        return _err(f"the model cannot run a process yet ({why})")
    if args.replay:
        return replay(args)
    try:
        check_host()
    except HostUnavailable as exc:
        return _err(f"no host oracle here: {exc}")
    return run_campaign(args)


def replay(args: argparse.Namespace) -> int:
    try:
        entry = corpus.load(args.replay)
    except ProgramError as exc:
        return _err(str(exc))
    host_record = None
    if args.recorded:
        if entry.host is None:
            return _err(f"{args.replay} has no recorded host result")
        host_record = entry.host
    else:
        try:
            check_host()
        except HostUnavailable as exc:
            if entry.host is None:
                return _err(f"no host oracle here ({exc}) and no recorded host result")
            print(f"note: {exc}; using the recorded host result", file=sys.stderr)
            host_record = entry.host
    oracle = Oracle()
    try:
        out = oracle.check(entry.program, host_record)
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


def _progress(total: int, quiet: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("oracle"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("agree {task.fields[agree]}  diverge {task.fields[diverge]}"
                               "  known {task.fields[known]}"),
                    TimeRemainingColumn(), disable=quiet, transient=False,
                    console=_stderr_console())


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def run_campaign(args: argparse.Namespace) -> int:
    counts = {"agree": 0, "diverge": 0, "known": 0, "host-error": 0}
    known_by: dict[str, int] = {}
    bad: list[Outcome] = []
    host_errors: list[str] = []
    oracle = Oracle()
    try:
        with _progress(args.runs, quiet=False) as progress:
            task = progress.add_task("runs", total=args.runs, agree=0, diverge=0, known=0)
            for out in campaign(args.runs, args.seed, args.max_steps, args.region, args.jobs,
                                oracle if args.jobs == 1 else None):
                v = out.verdict
                counts[v.status] += 1
                if v.status == "known" and v.known:
                    known_by[v.known] = known_by.get(v.known, 0) + 1
                if v.status == "diverge":
                    bad.append(out)
                if v.status == "host-error" and len(host_errors) < 5:
                    host_errors.append(f"run {out.run}: {v.message}")
                progress.update(task, advance=1, agree=counts["agree"], diverge=counts["diverge"],
                                known=counts["known"])
        shown = []
        for out in bad[: args.show]:
            small = out if args.no_shrink else oracle.minimise(out)
            if small.verdict.status != "diverge":   # shrinking must not lose it; keep the original
                small = out
            path = _save(args.out, args.seed, small)
            shown.append((out, small, path))
    finally:
        oracle.close()
    compared = args.runs - counts["host-error"]
    rate = counts["agree"] / compared if compared else 0.0
    if args.json:
        print(json.dumps({
            "runs": args.runs, "seed": args.seed, "max_steps": args.max_steps, "region": args.region,
            "counts": counts, "known_differences": known_by, "agreement_rate": rate,
            "host_errors": host_errors,
            "divergences": [{"run": o.run, "saved": path, "original_steps": len(o.program.steps),
                             "program": s.program.to_json(), "verdict": s.verdict.to_json()}
                            for o, s, path in shown],
            "diverging_runs": [o.run for o in bad]}))
    else:
        print(f"programs: {args.runs} (seed {args.seed}, up to {args.max_steps} steps, "
              f"region {args.region} pages)")
        print(f"agreement: {counts['agree']}/{compared} ({100 * rate:.2f}%)   divergences: "
              f"{counts['diverge']}   known differences: {counts['known']}   host errors: "
              f"{counts['host-error']}")
        for name, n in sorted(known_by.items()):
            print(f"  known difference {name}: {n}")
        for e in host_errors:
            print(f"  host error: {e}")
        if bad:
            print(f"diverging runs: {', '.join(str(o.run) for o in bad[:40])}"
                  + (" ..." if len(bad) > 40 else ""))
        for o, s, path in shown:
            print()
            print(f"--- run {o.run}: {len(o.program.steps)} steps, minimised to {len(s.program.steps)}")
            print(format_divergence(s.program, s.verdict, s.host, s.model))
            print(f"replay: specfault oracle --replay {path}")
    return 1 if counts["diverge"] or counts["host-error"] else 0


def _save(directory: str, seed: int, out: Outcome) -> str:
    entry = corpus.Entry(name=f"seed{seed}-run{out.run}", program=out.program, host=out.host,
                         note=(format_divergence(out.program, out.verdict).splitlines() or [""])[0],
                         expect="diverge", kernel=corpus.kernel_release())
    try:
        return corpus.save(entry, directory)
    except OSError as exc:
        return f"(not saved: {exc.strerror}) {os.path.join(directory, entry.name + '.json')}"
