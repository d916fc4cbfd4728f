"""Replay commands survive a pipe and a narrow terminal: printed whole on
one line however narrow the terminal (COLUMNS=40), so a user can copy the
line, and running it reproduces the same failure."""

from __future__ import annotations

import json
import shlex

import pytest
from clikit import run

NARROW = {"COLUMNS": "40"}


def _replay_commands(out: str) -> list[list[str]]:
    cmds = []
    for line in out.splitlines():
        _, sep, cmd = line.partition("replay:")
        if sep and cmd.strip().startswith("specfault check --replay"):
            cmds.append(shlex.split(cmd.strip()))
    return cmds


def _round_trip(argv: list[str], kind: str) -> None:
    """Run the printed command (through a pipe, narrow): the same failure,
    and it prints the same replay command again."""
    assert argv[:3] == ["specfault", "check", "--replay"] and len(argv) == 4, argv
    again = run(["check", "--replay", argv[3], "--json"], env=NARROW)
    assert again.returncode == 1, again.stderr
    assert json.loads(again.stdout)["failure"]["kind"] == kind
    text = run(["check", "--replay", argv[3]], env=NARROW)
    assert text.returncode == 1 and _replay_commands(text.stdout) == [argv]


def test_a_failing_scenario_prints_a_whole_replay_line() -> None:
    r = run(["check", "litmus.rcu-broken"], env=NARROW)
    assert r.returncode == 1, r.stderr
    cmds = _replay_commands(r.stdout)
    assert len(cmds) == 1
    _round_trip(cmds[0], "UseAfterFree")


@pytest.mark.parametrize("mutant,kind", [("dufour_no_vma_refcount", "UseAfterFree"),
                                         ("no_pte_none_recheck", "property")])
def test_the_kill_table_prints_whole_replay_lines(mutant: str, kind: str) -> None:
    r = run(["check", "--mutants", "--mutant", mutant], env=NARROW)
    assert r.returncode == 0, r.stderr
    cmds = _replay_commands(r.stdout)
    assert len(cmds) == 1 and f"+{mutant}:" in cmds[0][3]
    _round_trip(cmds[0], kind)
