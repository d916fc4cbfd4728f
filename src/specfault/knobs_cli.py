"""``specfault knobs``: the registry of knobs (config.KNOBS), as a table or JSON.

Every name accepted by ``Machine(**knobs)``, ``Config.with_``, ``bench
--knob`` and a mutant's definition is listed here with its default, its
kind and what it decides.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from specfault.config import KINDS, PROTOCOL_PRESETS, knob_table


def register(sub: Any) -> None:
    k = sub.add_parser(
        "knobs", help="list every configuration knob (name, default, kind, what it decides)",
        description="List the knob registry: every name Machine(**knobs), Config.with_(), "
                    "'bench --knob NAME=VALUE' and the mutants accept.",
        epilog="Examples:\n  specfault knobs\n  specfault knobs --kind mutant\n"
               "  specfault knobs --json | python -m json.tool",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--kind", choices=KINDS, help="only knobs of this kind")
    k.add_argument("--json", action="store_true", help="print the registry as JSON")
    k.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    rows = knob_table(args.kind)
    if args.json:
        print(json.dumps({"knobs": rows, "presets": PROTOCOL_PRESETS}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="knobs (config.KNOBS)")
    t.add_column("name", no_wrap=True)
    for col in ("kind", "default", "values", "what it decides"):
        t.add_column(col, overflow="fold")
    for r in rows:
        values = ", ".join(map(str, r["choices"])) if r["choices"] else type(r["default"]).__name__
        t.add_row(r["name"], r["kind"], str(r["default"]), values, r["doc"])
    con = Console()
    con.print(t)
    for proto, knobs in PROTOCOL_PRESETS.items():
        con.print(f"fault_protocol={proto} implies "
                  + ", ".join(f"{n}={v}" for n, v in knobs.items()))
    return 0
