"""The command line: help, the demo tour, bad input."""

from __future__ import annotations

import json

import pytest

from specfault.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("demo", "check", "oracle", "bench", "calibrate"))


@pytest.mark.parametrize("command", ["demo", "check", "oracle", "bench", "calibrate"])
def test_every_command_has_help_with_examples_and_exit_codes(command: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out and "Exit codes" in out and "130" in out
    assert f"specfault {command}" in out          # the examples run this command


def test_no_command_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and len(err.strip().splitlines()) == 1


def test_demo_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--only", "tour", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["tour"]
    steps = {s["step"]: s for s in summary["steps"]}
    # reads map the zero page: faults but no allocation
    assert steps["read"]["zero_page_fault"] == 4 and steps["read"]["pgalloc"] == 0
    # fork copies nothing; the two COW writes each copy one page
    assert steps["fork"]["pgalloc"] == steps["write"]["pgalloc"]
    assert steps["cow"]["cow_fault"] - steps["fork"]["cow_fault"] == 2
    # the exited processes gave back every frame except the file's page cache
    assert summary["frames_free_at_end"] + summary["page_cache_frames"] == summary["frames"]


def test_demo_text_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--only", "tour"]) == 0
    out = capsys.readouterr().out
    assert "rw-p" in out and "/data" in out


def test_demo_checks_and_kills(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--only", "check", "--only", "mutant", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["partial"] is False
    assert summary["check"] and all(r["ok"] for r in summary["check"])
    assert summary["mutant"]["killed"] and summary["mutant"]["schedule"]


def test_demo_sim_writes_plots(tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--only", "sim", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {s["workload"] for s in summary["sim"]} == {"app_launch", "pft"}
    for s in summary["sim"]:
        assert (tmp_path / f"{s['workload']}.png").stat().st_size > 1000
    pft = next(s for s in summary["sim"] if s["workload"] == "pft")
    spf32 = next(r for r in pft["runs"] if r["protocol"] == "speculative" and r["cpus"] == 32)
    assert spf32["ratio_vs_classic"] > 1.5
