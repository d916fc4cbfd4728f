"""``specfault check`` on the command line."""

from __future__ import annotations

import json

import pytest

from specfault.cli import main


def test_check_ok_and_fail_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "litmus.seqcount", "--preemptions", "none"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check", "litmus.seqcount-broken"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION property" in out and "specfault check --replay 'litmus.seqcount-broken:" in out


def test_replay_command_reproduces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "litmus.rcu-broken", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    line = data[0]["schedule"]
    assert data[0]["replay"] == f"specfault check --replay '{line}'"
    assert main(["check", "--replay", line, "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["failure"]["kind"] == "UseAfterFree" and again["trace"] == data[0]["trace"]


def test_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--replay", "nonsense"]) == 2
    assert main(["check", "no.such.scenario"]) == 2
    assert main(["check"]) == 2
    assert main(["check", "--list"]) == 0
    assert "litmus.tlb" in capsys.readouterr().out
