"""``specfault demo``: the guided tour of the model on built-in defaults."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from rich.console import Console
from rich.table import Table

from specfault import cliargs
from specfault.report.demo import run_demo

PARTS = ("tour", "check", "mutant", "sim")


EXAMPLES = """examples:
  specfault demo                          # the whole tour (about a minute)
  specfault demo --only tour              # just the address-space walk
  specfault demo --only check --only mutant --json
  specfault demo --only sim --out /tmp/plots

Exit codes: 0 the tour ran and every check held, 1 a check failed (or the
mutant survived), 2 bad input (an --out that cannot be written), 130
interrupted (Ctrl-C: the parts done so far are printed, marked partial).
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="a guided tour of the whole product on built-in defaults",
        description=textwrap.fill(
            "The tour: (1) build a small address space, fault it, fork it and split "
            "COW pages, printing maps, frames and counters (invariants checked after "
            "each step); (2) check the speculative page-fault protocol on the core "
            "races; (3) take one design decision away (a mutant) and show the "
            "counterexample the checker finds; (4) compare classic, speculative, "
            "per-VMA-lock and Dufour's speculative faults on the simulator (app_launch, "
            "pft) and write plots; then write the whole tour as one HTML page "
            "(OUT/report.html) and print its path.", 78),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print a JSON summary instead")
    p.add_argument("--only", choices=PARTS, action="append",
                   help="run only this part (repeatable; default: all)")
    p.add_argument("--out", default=None, metavar="DIR", type=cliargs.writable_dir,
                   help="where the plots and the HTML report go (default: ./specfault-demo); "
                        "created if missing")
    p.add_argument("--html", type=cliargs.writable_file(["html", "htm"], "HTML report"), default=None,
                   metavar="FILE.html", help="write the HTML report here instead (default: OUT/report.html)")
    p.set_defaults(func=main)


def sim_table(cmp: Any) -> Table:
    """A compact table of one comparison: the figures the seed is about."""
    elapsed = cmp.workload == "app_launch"
    t = Table(title=f"{cmp.workload}", box=None, header_style="bold")
    for col in ("CPUs", "protocol", "elapsed ms" if elapsed else "faults/s", "vs classic",
                "fault p99 µs", "mmap writer p99 µs", "mmap_lock wait p99 µs", "aborts"):
        t.add_column(col, justify="right")
    order = {"classic": 0, "speculative": 1, "pervma": 2, "dufour": 3}
    for r in sorted(cmp.runs, key=lambda r: (r.cpus, order.get(r.protocol, 9))):
        ratio = cmp.ratio(r.protocol, r.cpus)
        fig = f"{r.wall_us / 1e3:.2f}" if elapsed else f"{r.faults_per_s / 1e6:.2f}M"
        t.add_row(str(r.cpus), r.protocol, fig, f"{ratio:.2f}x" if ratio else "-",
                  f"{r.fault_lat['p99']:.1f}", f"{r.writer_lat['p99']:.1f}",
                  f"{r.lock_wait['p99']:.1f}", f"{r.abort_rate * 100:.2f}%")
    return t


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    parts = args.only or list(PARTS)
    if len(set(parts)) != len(parts):
        raise cliargs.BadArgument("--only", "a part is given twice")
    out_dir = args.out
    if out_dir is None and "sim" in parts:     # the default is checked like a given --out
        try:
            out_dir = cliargs.writable_dir("specfault-demo")
        except argparse.ArgumentTypeError as exc:
            raise cliargs.BadArgument("--out", f"the default ./specfault-demo: {exc}") from None
    if args.html:
        html_path = Path(args.html)
    else:                                       # before any work: the report must be writable
        try:
            out = out_dir if out_dir is not None else cliargs.writable_dir("specfault-demo")
        except argparse.ArgumentTypeError as exc:
            raise cliargs.BadArgument("--out", f"the default ./specfault-demo: {exc}") from None
        html_path = Path(out) / "report.html"
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)
    last: dict[str, int] = {}
    summary: dict[str, Any] = {}
    #: what the parts emitted so far (kept for a partial summary on Ctrl-C)
    rows: list[dict[str, Any]] = []
    sims: list[dict[str, Any]] = []
    story: list[tuple[str, Any]] = []       # everything emitted, in order, for the HTML report
    legend_shown = [False]

    def emit(kind: str, payload: Any) -> None:
        story.append((kind, payload))
        if args.json:
            return
        if kind == "step":
            console.print(f"\n[bold cyan]{payload}[/]")
        elif kind == "maps":
            console.print(payload.rstrip("\n"), style="green")
        elif kind == "pages":
            if not legend_shown[0]:
                legend_shown[0] = True
                console.print("  [bold]frame cells[/], one per page: [bold]-[/] nothing mapped, "
                              "[bold]zero[/] the shared zero page, [bold]P3[/] the tour's 3rd physical "
                              "page (numbered as first seen; PFNs get reused)\n"
                              "  suffix [bold]x[/] mapped once (exclusive: a write needs no copy), "
                              "[bold]s[/] shared by several processes (copy-on-write after fork)",
                              style="dim")
            who, labels = payload
            for i in range(0, len(labels), 10):
                head = f"  {who:>6} frames:" if i == 0 else " " * 16
                console.print(head + " " + " ".join(f"{x:>5}" for x in labels[i:i + 10]))
        elif kind == "stats":
            delta = {k: v - last.get(k, 0) for k, v in payload.items() if k != "nr_free_pages"}
            t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            for k in delta:
                t.add_column(k)
            t.add_column("free frames")
            t.add_row(*[f"+{v}" if v else "." for v in delta.values()],
                      str(payload["nr_free_pages"]))
            console.print(t)
            last.update(payload)

    def emit2(kind: str, payload: Any) -> None:
        story.append((kind, payload))
        if kind == "check":
            rows.append(payload)
        elif kind == "sim":
            cmp, path = payload
            sims.append({"workload": cmp.workload, "plot": path, "runs": len(cmp.runs)})
        if args.json:
            return
        if kind == "check":
            r = payload
            how = "exhaustive" if r["dfs_exhausted"] else "schedule budget"
            console.print(f"  {r['scenario']:24} {'[green]OK[/]' if r['ok'] else '[red]FAIL[/]'}  "
                          f"dfs {r['dfs_schedules']} schedules ({how}, <=1 preemption) + "
                          f"pct {r['pct_schedules']}  {r['seconds']}s")
        elif kind == "kill":
            k, report, _ex, _sched = payload
            console.print(f"  mutant [bold]{k['mutant']}[/]: {k['breaks']}")
            if k["killed"]:
                console.print(f"  killed by {k['scenario']} ({k['strategy']}) after "
                              f"{k['schedules']} schedules, {k['seconds']:.1f}s:\n")
                sys.stdout.flush()
                print(report.rstrip(), flush=True)      # never wrapped: it ends with the replay line
            else:
                console.print("  [red]survived the portfolio[/]")
        elif kind == "sim":
            cmp, path = payload
            console.print(sim_table(cmp))
            console.print(f"  plot: {path}")

    from specfault.report import tour as more

    current = ""
    try:
        current = "tour"
        if "tour" in parts:
            summary["tour"] = run_demo(emit)
            tour = summary["tour"]
            if not args.json:
                console.print(f"\n[bold]{tour['frames_free_at_end']} of {tour['frames']} frames free "
                              f"at the end ({tour['page_cache_frames']} hold the file's page cache); "
                              "check_mm held after every step.[/]")
        current = "check"
        if "check" in parts:
            if not args.json:
                console.print("\n[bold cyan]Checking the speculative protocol on the core races "
                              "(every execution: invariants, use-after-free, lockdep, "
                              "linearizability)[/]")
            summary["check"] = more.check_core(emit2)
        current = "mutant"
        if "mutant" in parts:
            if not args.json:
                console.print("\n[bold cyan]Taking one decision away: the commit skips the second "
                              "sequence check (SEQ2)[/]")
            summary["mutant"] = more.kill_one(emit2)
        current = "sim"
        if "sim" in parts:
            if not args.json:
                console.print("\n[bold cyan]What each protocol buys: the simulator, same model "
                              "code, many CPUs[/]")
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            err = Console(stderr=True)
            with Progress(TextColumn("  simulating {task.description}"), BarColumn(),
                          TextColumn("{task.completed}/{task.total} runs"), TimeElapsedColumn(),
                          console=err, transient=True, disable=not err.is_terminal) as prog:
                bar = prog.add_task("", total=more.sim_runs())
                summary["sim"] = more.simulate(emit2, Path(out_dir),
                                               lambda what: prog.update(bar, advance=1, description=what))
    except KeyboardInterrupt:
        done = [p for p in parts if p in summary]
        if current == "check" and rows:
            summary["check"] = rows         # the races checked so far
        if current == "sim" and sims:
            summary["sim"] = sims           # the comparisons finished so far
        if args.json:
            print(json.dumps({**summary, "partial": True, "interrupted": current}, default=str))
        sys.stdout.flush()
        print(f"specfault demo: interrupted during {current} (done: {', '.join(done) or 'nothing'}; "
              f"partial results {'on stdout' if args.json else 'above'})", file=sys.stderr)
        return 130
    from specfault.report.demo_html import demo_report

    summary["partial"] = False
    html_path.parent.mkdir(parents=True, exist_ok=True)
    demo_report(summary, story).write(html_path)
    if args.json:
        print(json.dumps(summary, default=str))
        print(f"HTML report: {html_path}", file=sys.stderr)
    else:
        console.print(f"\n[bold]The whole tour as one page (tables, plots, the counterexample, "
                      f"copyable commands): {html_path}[/]")
    ok = all(r["ok"] for r in summary.get("check", [])) and \
        summary.get("mutant", {"killed": True})["killed"]
    return 0 if ok else 1
