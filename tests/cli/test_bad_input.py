"""Every class of bad input, for every subcommand, is refused before any
work: exit 2, one line on stderr naming the argument, nothing on stdout, no
traceback.  "Before any work" is enforced: the functions that do the work
(explore, replay, the mutant hunt, the simulator, the oracle campaign, the
calibration, the demo's parts) are replaced by ones that fail the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clikit import SRC

from specfault.cli import main

BIN = "/bin/sh"     # a binary file every Linux has


def _work_started(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("work started before the arguments were checked")


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import specfault.check.cli as check_cli
    import specfault.check.portfolio as portfolio
    import specfault.check.split as split
    import specfault.oracle.cli as oracle_cli
    import specfault.report.demo_cli as demo_cli
    import specfault.report.tour as tour
    import specfault.sim.calibrate as calibrate
    import specfault.sim.cli as sim_cli

    for mod, name in [(split, "explore_unit"), (split, "piece_unit"), (split, "kill_unit"),
                      (check_cli, "replay"), (portfolio, "kill"),
                      (sim_cli, "run"), (calibrate, "fault_ns"), (calibrate, "mmap_munmap_ns"),
                      (calibrate, "copy_page_ns"), (oracle_cli, "campaign"), (oracle_cli, "Oracle"),
                      (demo_cli, "run_demo"), (tour, "check_core"), (tour, "kill_one"),
                      (tour, "simulate")]:
        monkeypatch.setattr(mod, name, _work_started)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Paths the cases refer to as {name}."""
    def write(name: str, text: str) -> str:
        p = tmp_path / name
        p.write_text(text)
        return str(p)

    good = json.loads(Path(__file__).resolve().parents[1].joinpath(
        "oracle_corpus", "agree-dontfork.json").read_text())
    bad_host = dict(good, host={"steps": "nope"})
    return {
        "tmp": str(tmp_path),
        "afile": write("afile.txt", "x"),
        "notjson": write("notjson.json", "{ not json"),
        "list": write("list.json", "[1, 2]"),
        "negative": write("negative.json", '{"op_ns": -1.0}'),
        "nan": write("nan.json", '{"line_transfer_ns": NaN}'),
        "string": write("string.json", '{"llc_ns": "fast"}'),
        "unknownkey": write("unknownkey.json", '{"op_nss": 2.0}'),
        "badwork": write("badwork.json", '{"work_ns": {"clear_page": -3}}'),
        "zerodram": write("zerodram.json", '{"dram_gbps": 0}'),
        "badprog": write("badprog.json", '{"format": "specfault-oracle/1", "steps": [{"op": "mmap"}]}'),
        "steps_int": write("steps_int.json", '{"format": "specfault-oracle/1", "steps": 5}'),
        # a program the kernel would refuse (ftruncate -1: EINVAL) cannot be
        # written at all: the runners' programs stay within what both sides run
        "negsize": write("negsize.json", '{"format": "specfault-oracle/1", "steps": '
                         '[{"op": "ftruncate", "file": 0, "size": -1}]}'),
        "badadvice": write("badadvice.json", '{"format": "specfault-oracle/1", "steps": '
                           '[{"op": "madvise", "page": 0, "npages": 1, "advice": "MADV_SWAPOUT"}]}'),
        "badhost": write("badhost.json", json.dumps(bad_host)),
        "good": write("good.json", json.dumps(good)),
    }


# (argv, the argument the one line must name)
CASES: list[tuple[list[str], str]] = [
    # -------- specfault (no or unknown command)
    (["nosuchcommand"], "COMMAND"),
    # -------- check: counts and ranges
    (["check", "litmus.seqcount", "--schedules", "0"], "--schedules"),
    (["check", "litmus.seqcount", "--schedules", "many"], "--schedules"),
    (["check", "litmus.seqcount", "--schedules", "-5"], "--schedules"),
    (["check", "litmus.seqcount", "--preemptions", "-1"], "--preemptions"),
    (["check", "litmus.seqcount", "--preemptions", "lots"], "--preemptions"),
    (["check", "litmus.seqcount", "--step-limit", "0"], "--step-limit"),
    (["check", "litmus.seqcount", "--step-limit", "100000000"], "--step-limit"),
    (["check", "litmus.seqcount", "--pct-depth", "0"], "--pct-depth"),
    (["check", "litmus.seqcount", "--seed", "-1"], "--seed"),
    (["check", "litmus.seqcount", "--seed", "1.5"], "--seed"),
    # -------- check: durations
    (["check", "litmus.seqcount", "--budget", "nan"], "--budget"),
    (["check", "litmus.seqcount", "--budget", "inf"], "--budget"),
    (["check", "litmus.seqcount", "--budget", "-5"], "--budget"),
    (["check", "litmus.seqcount", "--budget", "0s"], "--budget"),
    (["check", "litmus.seqcount", "--budget", "soon"], "--budget"),
    # -------- check: names
    (["check", "no.such.scenario"], "SCENARIO"),
    (["check", "nomodule:attr"], "SCENARIO"),
    (["check", "specfault.check.litmus:no_such_attr"], "SCENARIO"),
    (["check", "specfault.check.litmus:STRATEGIES"], "SCENARIO"),
    (["check", "zzz*"], "SCENARIO"),
    (["check", "litmus.seqcount", "no.such.scenario"], "SCENARIO"),
    (["check", "--scenario", "fault-vs-munmpa"], "--scenario"),
    (["check", "--mutant", "no_such_mutant"], "--mutant"),
    (["check", "--protocol", "lespinasse"], "--protocol"),
    (["check", "--strategy", "bfs", "litmus.seqcount"], "--strategy"),
    # -------- check: replay lines
    (["check", "--replay", "nonsense"], "--replay"),
    (["check", "--replay", "litmus.seqcount:dfs:x:0"], "--replay"),
    (["check", "--replay", "litmus.seqcount:dfs:0:0*100000000"], "--replay"),
    (["check", "--replay", "litmus.seqcount:dfs:0:0*0"], "--replay"),
    (["check", "--replay", "litmus.seqcount:dfs:0:a.b"], "--replay"),
    (["check", "--replay", "mm.fault-vs-munmap@speculativ:dfs:0:0*3"], "--replay"),
    (["check", "--replay", "litmus.seqcount:dfs:0:0*5000", "--step-limit", "1000"], "--replay"),
    # -------- check: output places
    (["check", "--mutants", "--save", "/proc/specfault-regressions"], "--save"),
    (["check", "--mutants", "--save", "{afile}"], "--save"),
    (["check", "--mutants", "--save", "{afile}/sub"], "--save"),
    # -------- check: options that do not fit the mode
    (["check", "--mutants", "--strategy", "pct"], "--strategy"),
    (["check", "--mutants", "--preemptions", "1"], "--preemptions"),
    (["check", "--replay", "litmus.seqcount:dfs:0:-", "--seed", "3"], "--seed"),
    (["check", "--replay", "litmus.seqcount:dfs:0:-", "--mutants"], "--mutants"),
    (["check", "litmus.seqcount", "--save", "{tmp}"], "--save"),
    (["check", "litmus.seqcount", "--scenario", "fault-vs-munmap"], "SCENARIO"),
    (["check", "--list", "--schedules", "3"], "--schedules"),
    (["check"], "SCENARIO"),
    # -------- bench: names and lists
    (["bench", "-w", "nope"], "--workload"),
    (["bench", "--cpus", "0"], "--cpus"),
    (["bench", "--cpus", "a,b"], "--cpus"),
    (["bench", "--cpus", "1,2000"], "--cpus"),
    (["bench", "--cpus", "2,2"], "--cpus"),
    (["bench", "--cpus", ","], "--cpus"),
    (["bench", "--protocols", "classic,magic"], "--protocols"),
    (["bench", "--protocols", "classic,classic"], "--protocols"),
    (["bench", "--faults", "0"], "--faults"),
    (["bench", "--faults", "1e5"], "--faults"),
    (["bench", "--seed", "-3"], "--seed"),
    # -------- bench: sizes beyond memory
    (["bench", "--faults", "100000000"], "--faults"),
    (["bench", "-w", "app_launch", "--param", "free_frac=0.0001"], "--param"),
    (["bench", "-w", "app_launch", "--param", "other=zram"], "--param"),
    (["bench", "-w", "pressure", "--param", "limit=0"], "--param"),
    (["bench", "-w", "app_launch", "--cpus", "1024"], "--cpus"),
    (["bench", "-w", "app_launch", "--cpus", "4", "--param", "threads=5000"], "--param"),
    (["bench", "--faults", "1000", "--max-memory", "1k"], "--max-memory"),
    (["bench", "--faults", "3000000", "--max-memory", "1G"], "--faults"),
    # -------- bench: workload parameters
    (["bench", "--param", "nope=1"], "--param"),
    (["bench", "--param", "novalue"], "--param"),
    (["bench", "--param", "threads=-1"], "--param"),
    (["bench", "--param", "threads=many"], "--param"),
    (["bench", "--param", "think_ns=nan"], "--param"),
    (["bench", "--param", "think_ns=-5"], "--param"),
    (["bench", "--param", "vma_per_thread=maybe"], "--param"),
    (["bench", "--param", "faults=10"], "--param"),
    (["bench", "-w", "spf_test", "--param", "chunk_pages=8"], "--param"),
    (["bench", "-w", "ebizzy", "--param", "max_pages=0"], "--param"),
    # -------- bench: knobs
    (["bench", "--knob", "novalue"], "--knob"),
    (["bench", "--knob", "page_table_free=bogus"], "--knob"),
    (["bench", "--knob", "nr_cpus=3"], "--knob"),
    (["bench", "--knob", "mm_lock_seq_bits=wide"], "--knob"),
    # -------- bench: files
    (["bench", "--profile", "/nonexistent/profile.json"], "--profile"),
    (["bench", "--profile", "{tmp}"], "--profile"),
    (["bench", "--profile", BIN], "--profile"),
    (["bench", "--profile", "{notjson}"], "--profile"),
    (["bench", "--profile", "{list}"], "--profile"),
    (["bench", "--profile", "{negative}"], "--profile"),
    (["bench", "--profile", "{nan}"], "--profile"),
    (["bench", "--profile", "{string}"], "--profile"),
    (["bench", "--profile", "{unknownkey}"], "--profile"),
    (["bench", "--profile", "{badwork}"], "--profile"),
    (["bench", "--profile", "{zerodram}"], "--profile"),
    (["bench", "--plot", "/nonexistent/dir/p.png"], "--plot"),
    (["bench", "--plot", "{tmp}/p.xyz"], "--plot"),
    (["bench", "--plot", "{tmp}/p"], "--plot"),
    (["bench", "--plot", "{tmp}"], "--plot"),
    (["bench", "--plot", "/proc/p.png"], "--plot"),
    # -------- calibrate
    (["calibrate", "--out", "/nonexistent/dir/p.json"], "--out"),
    (["calibrate", "--out", "{tmp}"], "--out"),
    (["calibrate", "--out", "/proc/p.json"], "--out"),
    # -------- oracle: counts and ranges
    (["oracle", "--runs", "0"], "--runs"),
    (["oracle", "--runs", "-1"], "--runs"),
    (["oracle", "--runs", "many"], "--runs"),
    (["oracle", "--max-steps", "0"], "--max-steps"),
    (["oracle", "--max-steps", "100000"], "--max-steps"),
    (["oracle", "--region", "4"], "--region"),
    (["oracle", "--region", "5000"], "--region"),
    (["oracle", "--jobs", "0"], "--jobs"),
    (["oracle", "--jobs", "1000"], "--jobs"),
    (["oracle", "--show", "-1"], "--show"),
    (["oracle", "--seed", "-1"], "--seed"),
    (["oracle", "--max-steps", "10000", "--region", "4096"], "--max-steps"),
    (["oracle", "--jobs", "64", "--max-steps", "1000", "--region", "1024"], "--jobs"),
    (["oracle", "--max-memory", "lots"], "--max-memory"),
    # -------- oracle: files and modes
    (["oracle", "--out", "/proc/specfault-divergences"], "--out"),
    (["oracle", "--replay", "/nonexistent.json"], "--replay"),
    (["oracle", "--replay", BIN], "--replay"),
    (["oracle", "--replay", "{tmp}"], "--replay"),
    (["oracle", "--replay", "{notjson}"], "--replay"),
    (["oracle", "--replay", "{badprog}"], "--replay"),
    (["oracle", "--replay", "{steps_int}"], "--replay"),
    (["oracle", "--replay", "{negsize}"], "--replay"),
    (["oracle", "--replay", "{badadvice}"], "--replay"),
    (["oracle", "--replay", "{badhost}"], "--replay"),
    (["oracle", "--replay", "{good}", "--runs", "3"], "--runs"),
    (["oracle", "--recorded"], "--recorded"),
    # -------- demo
    (["demo", "--only", "everything"], "--only"),
    (["demo", "--only", "tour", "--only", "tour"], "--only"),
    (["demo", "--out", "/proc/specfault-demo"], "--out"),
    (["demo", "--out", "{afile}"], "--out"),
]


def _id(case: tuple[list[str], str]) -> str:
    argv, arg = case
    return " ".join(argv)[:60]


@pytest.mark.parametrize("argv,arg", CASES, ids=[_id(c) for c in CASES])
def test_refused_before_any_work(argv: list[str], arg: str, files: dict[str, str], no_work: None,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(**files) for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, f"not one line on stderr:\n{err}"
    assert f"argument {arg}" in lines[0] or (arg.startswith("SPECFAULT") and arg in lines[0]), lines[0]
    assert len(lines[0]) <= 500
    assert "Traceback" not in err and out == ""


def test_env_variables_are_checked_like_options(no_work: None, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for var, value in [("SPECFAULT_CHECK_STEP_LIMIT", "abc"), ("SPECFAULT_CHECK_STEP_LIMIT", "5"),
                       ("SPECFAULT_CHECK_MAX_SCHEDULES", "0"), ("SPECFAULT_CHECK_STRATEGY", "bfs"),
                       ("SPECFAULT_CHECK_BUDGET_SECONDS", "nan"), ("SPECFAULT_CHECK_MINIMIZE", "perhaps")]:
        monkeypatch.setenv(var, value)
        assert main(["check", "litmus.seqcount"]) == 2
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and var in err and out == "", (var, err)
        monkeypatch.delenv(var)


def test_a_typo_in_a_knob_is_refused(no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--knob", "spf_vma_refcont=true"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "argument --knob" in err and "spf_vma_refcount" in err
    assert main(["bench", "--knob", "no_seq2_check=maybe"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "true or false" in err


def test_an_unknown_replay_scenario_is_one_short_line(no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Not the list of 1,500 registered names: a few close matches."""
    assert main(["check", "--replay", "mm.fault-vs-munmap@speculativ:dfs:0:0*3"]) == 2
    err = capsys.readouterr().err
    assert len(err) < 400 and "mm.fault-vs-munmap@speculative" in err


# the command as a user runs it: no traceback from the real process either
@pytest.mark.parametrize("argv,arg", [
    (["check", "nomodule:attr"], "SCENARIO"),
    (["oracle", "--replay", BIN], "--replay"),
    (["check", "--replay", "litmus.seqcount:dfs:0:0*100000000"], "--replay"),
    (["bench", "--plot", "/nonexistent/dir/p.png", "--cpus", "1", "--faults", "10"], "--plot"),
])
def test_refused_by_the_real_command(argv: list[str], arg: str) -> None:
    import os

    env = dict(os.environ, PYTHONPATH=SRC)
    r = subprocess.run([sys.executable, "-m", "specfault.cli", *argv], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"argument {arg}" in lines[0], r.stderr


def test_every_workload_parameter_has_a_range() -> None:
    """A parameter added to a workload must be given a range here, or
    --param would not know how to check it."""
    from specfault.sim.cli import CHOICES, PARAMS, accepted_params
    from specfault.sim.workloads import WORKLOADS

    for name in WORKLOADS:
        missing = set(accepted_params(name)) - set(PARAMS) - set(CHOICES)
        assert not missing, f"{name}: no range for {missing}"
