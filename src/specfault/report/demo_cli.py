"""``specfault demo``: the guided tour of the model on built-in defaults."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from specfault.report.demo import run_demo


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="a guided tour: build, fault, fork and COW-split an address space",
        description="Build a small address space on the model, fault it in, fork it and "
                    "split COW pages, printing /proc-style maps, per-page frames and fault "
                    "counters at every step (invariants are checked after each).")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    last: dict[str, int] = {}

    def emit(kind: str, payload: Any) -> None:
        if args.json:
            return
        if kind == "step":
            console.print(f"\n[bold cyan]{payload}[/]")
        elif kind == "maps":
            console.print(payload.rstrip("\n"), style="green")
        elif kind == "pages":
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

    summary = run_demo(emit)
    if args.json:
        print(json.dumps(summary))
    else:
        console.print(f"\n[bold]{summary['frames_free_at_end']} of {summary['frames']} frames "
                      f"free at the end ({summary['page_cache_frames']} hold the file's page "
                      "cache); check_mm held after every step.[/]")
    return 0
