"""The ``specfault`` command line.

Each capability lives in its own module exposing ``register(subparsers)``,
which adds a subcommand whose handler (``set_defaults(func=...)``) returns
the exit code: 0 success, 1 a finding (violation, divergence), 2 bad input,
130 interrupted (Ctrl-C: the handler prints what it had done, marked
partial).

Bad input is refused before any work, on one line of stderr that names the
argument and what it accepts (``specfault.cliargs``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from specfault.cliargs import BadArgument, one_line

# subcommand modules, in the order --help lists them
COMMANDS = [
    "specfault.report.demo_cli",
    "specfault.check.cli",
    "specfault.check.fuzz.cli",
    "specfault.oracle.cli",
    "specfault.sim.cli",
    "specfault.trace.cli",
    "specfault.knobs_cli",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit code 2, one line naming the argument
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="specfault",
        description=(
            "An executable, checkable model of the Linux page-fault path: run it, "
            "check its concurrency protocols under every interleaving, and measure them."
        ),
        epilog="Run 'specfault COMMAND --help' for one command. Start with 'specfault demo'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that capability is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:        # --help (0), or bad input (2, one line printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except BadArgument as exc:       # a check that needed several arguments
        sub = f"specfault {args.command}"
        print(f"{sub}: error: {one_line(str(exc))} (see '{sub} --help')", file=sys.stderr)
        return 2
    except BrokenPipeError:          # e.g. `specfault demo --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:        # handlers print their partial results first
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
