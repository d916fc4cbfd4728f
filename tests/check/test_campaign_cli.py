"""``specfault check --jobs N | --backend ray [--address A]``: validated
before any work; the same output as one process; Ctrl-C kills the workers
and prints the partial results."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from specfault.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from clikit import interrupt  # noqa: E402


@pytest.mark.parametrize("argv, arg", [
    (["--mutants", "--jobs", "0"], "--jobs"),
    (["--mutants", "--jobs", "-1"], "--jobs"),
    (["--mutants", "--backend", "foo"], "--backend"),
    (["--mutants", "--address", "10.0.0.1:6379"], "--address"),
    (["--mutants", "--backend", "ray", "--address", "no port"], "--address"),
    (["--mutants", "--backend", "ray", "--address", "127.0.0.1:1"], "--address"),   # nobody there
    (["--replay", "litmus.rcu-broken:dfs:0:0", "--jobs", "2"], "--jobs"),
])
def test_bad_campaign_arguments(argv: list[str], arg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"argument {arg}:" in err[0], err


def test_ray_not_installed_is_bad_input(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import specfault.check.campaign as campaign

    monkeypatch.setattr(campaign, "ray_available", lambda: False)
    assert main(["check", "--mutants", "--backend", "ray"]) == 2
    assert "argument --backend: ray is not installed: pip install 'specfault[ray]'" in capsys.readouterr().err


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    code = main(["check", *argv, "--json"])
    data = json.loads(capsys.readouterr().out)
    for d in data:
        d.pop("seconds", None)
        d.pop("elapsed", None)
    return code, data


def test_two_processes_print_what_one_does(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenario", "fault-vs-munmap", "--protocol", "all", "--preemptions", "1"]
    one = _json(argv, capsys)
    assert one[0] == 0 and len(one[1]) == 4
    assert _json([*argv, "--jobs", "2"], capsys) == one
    argv = ["--mutants", "--mutant", "vma_free_immediate", "--schedules", "300"]
    one = _json(argv, capsys)
    assert one[0] == 0 and one[1][0]["killed"]
    assert _json([*argv, "--jobs", "2"], capsys) == one


def _clean(r: object) -> None:
    assert r.code == 130, (r.code, r.out[-2000:], r.err[-2000:])          # type: ignore[attr-defined]
    assert r.latency < 2.0, f"exit {r.latency:.2f} s after SIGINT"       # type: ignore[attr-defined]
    both = r.out + r.err                                                 # type: ignore[attr-defined]
    assert "Traceback" not in both and "KeyboardInterrupt" not in both, both[-3000:]


def test_ctrl_c_stops_a_kill_table_on_two_processes() -> None:
    r = interrupt(["check", "--mutants", "--jobs", "2"],
                  lambda out, err: "hunting mutants (2 local processes)" in err, settle=1.0)
    _clean(r)
    assert "mutant kill table (partial: interrupted)" in r.out
    assert len(re.findall(r"INTERRUPTED", r.out)) >= 2, r.out       # both hunts that were running
    assert "interrupted: " in r.err


def test_ctrl_c_stops_a_split_search_on_two_processes() -> None:
    r = interrupt(["check", "--scenario", "fault-vs-munmap", "--protocol", "speculative", "--preemptions",
                   "3", "--schedules", "none", "--jobs", "2"],
                  lambda out, err: "exploring (2 local processes)" in err, settle=1.0)
    _clean(r)
    assert re.search(r"mm.fault-vs-munmap@speculative: no violation so far .*, interrupted", r.out), r.out
