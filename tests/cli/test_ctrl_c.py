"""Ctrl-C, for real: each subcommand is started as a process, SIGINT goes to
its process group once its output shows work done, and it must exit 130
within two seconds with the partial results printed (marked) and no
traceback — from it or from any worker process it started."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from clikit import Interrupted, interrupt

from specfault.cli import main

LIMIT = 2.0     # seconds from SIGINT to exit


def _clean(r: Interrupted) -> None:
    assert r.code == 130, (r.code, r.out[-2000:], r.err[-2000:])
    assert r.latency < LIMIT, f"exit {r.latency:.2f} s after SIGINT"
    assert "Traceback" not in r.out + r.err and "KeyboardInterrupt" not in r.out + r.err, r.err[-3000:]


def _host() -> None:
    from specfault.oracle.host import HostUnavailable, check_host

    try:
        check_host()
    except HostUnavailable as exc:
        pytest.skip(f"no host oracle: {exc}")


SPINNING = """
import sys
from specfault.check.scenario import Scenario, Thread
from specfault.runtime import KObject, Load, Store
class S(KObject):
    x = 0
started = []
def setup(env):
    if not started:
        started.append(1)
        print("spinning: started", file=sys.stderr, flush=True)
    return S()
async def reader(s):
    while True:
        await Load(s, "x")
async def writer(s):
    while True:
        await Store(s, "x", 1)
scenario = Scenario("spinning", setup, [Thread("r", reader), Thread("w", writer)], rcu=False)
"""


@pytest.fixture
def spinning(tmp_path: Path) -> dict[str, str]:
    """A scenario that never ends (a livelock) and says on stderr when it
    first runs: the environment that makes it importable."""
    (tmp_path / "spinning.py").write_text(SPINNING)
    return {"PYTHONPATH": str(tmp_path)}


def _started(out: str, err: str) -> bool:
    return "spinning: started" in err


def test_check_prints_the_scenarios_done_and_the_interrupted_one(spinning: dict[str, str]) -> None:
    r = interrupt(["check", "litmus.seqcount", "spinning:scenario", "--step-limit", "1000000"],
                  _started, env=spinning, settle=0.3)
    _clean(r)
    lines = r.out.strip().splitlines()
    assert lines[0].startswith("litmus.seqcount: OK") and lines[0].endswith("exhaustive")
    assert lines[-1].startswith("spinning: no violation so far") and lines[-1].endswith(", interrupted")
    assert "interrupted: 1 of 2 scenarios done" in r.err


def test_check_json_is_a_list_ending_with_the_interrupted_scenario(spinning: dict[str, str]) -> None:
    r = interrupt(["check", "litmus.seqcount", "spinning:scenario", "--step-limit", "1000000", "--json"],
                  _started, env=spinning, settle=0.3)
    _clean(r)
    data = json.loads(r.out)
    assert [d["scenario"] for d in data] == ["litmus.seqcount", "spinning"]
    assert data[0]["interrupted"] is False and data[-1]["interrupted"] is True


def test_check_mutants_prints_the_partial_kill_table() -> None:
    r = interrupt(["check", "--mutants"],          # once the second mutant's hunt is on screen
                  lambda out, err: re.search(r"hunting (?!no_seq2_check\b|mutants\b)\w+", err) is not None)
    _clean(r)
    assert "mutant kill table (partial: interrupted)" in r.out
    assert re.search(r"no_seq2_check .* fault-vs-munmap", r.out)
    assert "INTERRUPTED" in r.out and "replay: specfault check --replay 'mm.fault-vs-munmap" in r.out


def test_check_replay_stops(spinning: dict[str, str]) -> None:
    """A replay that would run 800,000 steps (of a livelock) stops at once."""
    r = interrupt(["check", "--replay", "spinning:scenario:dfs:0:" + ".".join(["0*1000", "1*1000"] * 400),
                   "--step-limit", "1000000"], _started, env=spinning, settle=0.3)
    _clean(r)
    assert "replay interrupted" in r.err


def test_bench_prints_the_runs_done() -> None:
    r = interrupt(["bench", "-w", "pft", "--cpus", "1,2,4,8,16,32", "--faults", "5000"],
                  lambda out, err: re.search(r"\b[1-9]\d*/18\b", err) is not None)
    _clean(r)
    assert "partial: interrupted" in r.out and "classic" in r.out
    assert "interrupted after" in r.err


def test_bench_json_is_marked_partial() -> None:
    r = interrupt(["bench", "-w", "pft", "--cpus", "1,2,4,8,16,32", "--faults", "5000", "--json"],
                  lambda out, err: re.search(r"\b[1-9]\d*/18\b", err) is not None)
    _clean(r)
    data = json.loads(r.out)
    assert data["partial"] is True and 1 <= len(data["runs"]) < 18


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_oracle_prints_the_counts_so_far(jobs: str) -> None:
    _host()
    r = interrupt(["oracle", "--runs", "400", "--jobs", jobs],
                  lambda out, err: re.search(r"\b[1-9]\d*/400\b", err) is not None)
    _clean(r)
    m = re.search(r"programs: (\d+) of 400 \(partial: interrupted\)", r.out)
    assert m and 1 <= int(m.group(1)) < 400, r.out
    assert "agreement:" in r.out


def test_demo_prints_the_parts_done(tmp_path: Path) -> None:
    r = interrupt(["demo", "--out", str(tmp_path)], lambda out, err: "fault-vs-munmap" in out)
    _clean(r)
    assert "check_mm held after every step" in r.out
    assert "interrupted during check (done: tour" in r.err


def test_calibrate_prints_the_measurements_so_far(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Calibration takes well under a second, too short to interrupt from
    outside reliably: the second measurement raises KeyboardInterrupt."""
    import specfault.sim.calibrate as cal

    def ctrl_c() -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(cal, "mmap_munmap_ns", ctrl_c)
    out = tmp_path / "p.json"
    assert main(["calibrate", "--out", str(out)]) == 130
    o, e = capsys.readouterr()
    assert o.startswith("fault_ns") and "interrupted after 1 of 4 measurements" in e
    assert not out.exists()
