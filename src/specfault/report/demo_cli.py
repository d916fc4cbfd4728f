"""``specfault demo``: the guided tour of the model on built-in defaults."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from specfault.report.demo import run_demo
from specfault.report.outputs import html_file

PARTS = ("tour", "check", "mutant", "sim")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="a guided tour of the whole product on built-in defaults",
        description="The tour: (1) build a small address space, fault it, fork it and split "
                    "COW pages, printing maps, frames and counters (invariants checked after "
                    "each step); (2) check the speculative page-fault protocol on the core "
                    "races; (3) take one design decision away (a mutant) and show the "
                    "counterexample the checker finds; (4) compare classic, speculative, "
                    "per-VMA-lock and Dufour's speculative faults on the simulator (app_launch, "
                    "pft) and write plots; then write the whole tour as one HTML page "
                    "(OUT/report.html) and print its path.")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead")
    p.add_argument("--only", choices=PARTS, action="append",
                   help="run only this part (repeatable; default: all)")
    p.add_argument("--out", default="specfault-demo", metavar="DIR",
                   help="where the plots and the HTML report go (default: ./specfault-demo)")
    p.add_argument("--html", type=html_file, default=None, metavar="FILE.html",
                   help="write the HTML report here instead (default: OUT/report.html)")
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

    html_path = Path(args.html) if args.html else Path(args.out) / "report.html"
    try:                                    # before any work: the report must be writable
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_file(str(html_path))
    except (OSError, argparse.ArgumentTypeError) as exc:
        print(f"specfault demo: error: cannot write the report {html_path}: {exc}", file=sys.stderr)
        return 2
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)
    last: dict[str, int] = {}
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

    parts = args.only or list(PARTS)
    summary: dict[str, Any] = {}
    if "tour" in parts:
        summary["tour"] = run_demo(emit)
        tour = summary["tour"]
        if not args.json:
            console.print(f"\n[bold]{tour['frames_free_at_end']} of {tour['frames']} frames free "
                          f"at the end ({tour['page_cache_frames']} hold the file's page cache); "
                          "check_mm held after every step.[/]")
    from specfault.report import tour as more

    def emit2(kind: str, payload: Any) -> None:
        story.append((kind, payload))
        if args.json:
            return
        if kind == "check":
            r = payload
            how = "exhaustive" if r["dfs_exhausted"] else "budget"
            console.print(f"  {r['scenario']:24} {'[green]OK[/]' if r['ok'] else '[red]FAIL[/]'}  "
                          f"dfs {r['dfs_schedules']} schedules ({how}, <=1 preemption) + "
                          f"pct {r['pct_schedules']}  {r['seconds']}s")
        elif kind == "kill":
            k, report, _ex, _sched = payload
            console.print(f"  mutant [bold]{k['mutant']}[/]: {k['breaks']}")
            if k["killed"]:
                console.print(f"  killed by {k['scenario']} ({k['strategy']}) after "
                              f"{k['schedules']} schedules, {k['seconds']:.1f}s:\n")
                console.print(report.rstrip(), highlight=False, markup=False, soft_wrap=True)
            else:
                console.print("  [red]survived the portfolio[/]")
        elif kind == "sim":
            cmp, path = payload
            console.print(sim_table(cmp))
            console.print(f"  plot: {path}")

    if "check" in parts:
        if not args.json:
            console.print("\n[bold cyan]Checking the speculative protocol on the core races "
                          "(every execution: invariants, use-after-free, lockdep, "
                          "linearizability)[/]")
        summary["check"] = more.check_core(emit2)
    if "mutant" in parts:
        if not args.json:
            console.print("\n[bold cyan]Taking one decision away: the commit skips the second "
                          "sequence check (SEQ2)[/]")
        summary["mutant"] = more.kill_one(emit2)
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
            summary["sim"] = more.simulate(emit2, Path(args.out),
                                           lambda what: prog.update(bar, advance=1, description=what))
    from specfault.report.demo_html import demo_report
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
