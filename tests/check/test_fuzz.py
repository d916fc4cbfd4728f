"""``specfault fuzz``: programs as data, determinism, coverage, shrinking, the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from specfault.check.engine import Execution, replay_chooser
from specfault.check.explore import Interrupted, explore
from specfault.check.fuzz import loop
from specfault.check.fuzz.compile import build
from specfault.check.fuzz.generate import generate, mutate
from specfault.check.fuzz.loop import batch_programs, fuzz
from specfault.check.fuzz.program import Program, ProgramError, dumps, loads
from specfault.check.fuzz.regress import Regression, load
from specfault.check.fuzz.run import FuzzConfig, run_program, shrink
from specfault.cli import main

#: found by the fuzzer (seed 0, program 27) under no_pte_none_recheck
BIG = ("win=2 file=0 | P.mmap(0,2,rw,anon,private,fixed,0) P.read(0) P.read(0) | "
       "P: mprotect(1,2,rw) write(0) | P: read(2) write(0) | P: mprotect(0,2,rw) | "
       "P: fork_exit(1) mmap(0,2,rw,anon,private,hint,0)")
#: a quick kill: no_pte_none_recheck, seed 2, 30 schedules per program (program 4)
QUICK = FuzzConfig(("speculative",), "no_pte_none_recheck", 30, 0)


def _programs(n: int = 60) -> list[Program]:
    rng = random.Random(7)
    progs = [generate(rng) for _ in range(n // 2)]
    progs += [mutate(rng, rng.choice(progs), progs) for _ in range(n - len(progs))]
    return progs


def test_programs_round_trip_as_text_and_json_and_hash() -> None:
    progs = _programs()
    for p in progs:
        assert Program.parse(p.text()) == p
        assert loads(dumps(p)) == p
        assert Program.from_json(json.loads(json.dumps(p.to_json()))) == p
        assert 2 <= len(p.threads) <= 4
    assert len({hash(p) for p in progs}) == len(set(progs))
    assert len({p.digest() for p in progs}) == len(set(progs))


@pytest.mark.parametrize("text,why", [
    ("win=4 file=0 | - | P: frobnicate(1)", "unknown op"),
    ("win=4 file=0 | - | P: write(9)", "page must be"),
    ("win=4 file=0 | - | P: exit() write(1)", "last op"),
    ("win=4 file=0 | - | C1: write(1)", "no such process"),
    ("win=4 file=0 | P.fork_exit(0) | P: write(1)", "cannot be a setup op"),
    ("win=4 file=0 | - | P: fork()", "cannot be a thread op"),
    ("win=4 file=0 | - | P: munmap(1)", "takes 2 arguments"),
    ("win=99 file=0 | - | P: write(1)", "window must be"),
    ("win=4 | - | P: write(1)", "win=N file=N"),
    ("win=4 file=0 | -", "1..4 threads"),
])
def test_bad_programs_are_refused_naming_why(text: str, why: str) -> None:
    with pytest.raises(ProgramError, match=why):
        Program.parse(text)


def test_generation_is_deterministic() -> None:
    assert batch_programs(5, 0, [], 8) == batch_programs(5, 0, [], 8)
    corpus = batch_programs(5, 0, [], 8)
    assert batch_programs(5, 3, corpus, 8) == batch_programs(5, 3, corpus, 8)
    assert batch_programs(5, 0, [], 8) != batch_programs(6, 0, [], 8)


def test_same_seed_same_results_whatever_the_jobs() -> None:
    cfg = FuzzConfig(("pervma",), None, 6, 11)
    one = fuzz(cfg, programs=10)
    again = fuzz(cfg, programs=10)
    two = fuzz(cfg, programs=10, jobs=2)
    for r in (again, two):
        assert (r.programs, r.schedules, r.coverage, r.corpus, r.growth) == \
               (one.programs, one.schedules, one.coverage, one.corpus, one.growth)
    assert one.ok and one.programs == 10 and one.growth[-1] == (10, len(one.coverage))


def test_coverage_names_the_fault_the_abort_and_the_writer() -> None:
    prog = Program.parse("win=4 file=0 | P.mmap(0,4,rw,anon,private,fixed,0) P.write(0) | "
                         "P: write(1) | P: munmap(0,4)")
    res = run_program(prog, FuzzConfig(("speculative", "classic"), None, 90))
    assert res.ok
    cov = set(res.coverage)
    assert ("classic", "anon", "-", "-", "-") in cov           # the fault alone
    assert ("speculative", "anon", "-", "-", "-") in cov
    # a speculative fault that saw the munmap (a writer inside: odd count)
    assert any(c[0] == "speculative" and c[2] != "-" and c[3] == "munmap" for c in cov)
    # ... and one that queued on mmap_lock behind it
    assert any(c[4] == "mmap_lock" for c in cov)
    assert all(c[1] != "none" or c[2] == "-" for c in cov if c[0] == "classic")


def test_a_short_fuzz_run_finds_a_mutant() -> None:
    out = fuzz(QUICK, programs=16)
    assert not out.ok and out.failure is not None
    assert out.failure_index == 5 and out.failure.kind == "property"
    # the failing schedule replays
    ex = Execution(build(out.failure.program, "speculative", QUICK.mutant)).run(
        replay_chooser(out.failure.choices))
    assert ex.failure is not None and ex.failure.kind == "property"


def test_shrinking_makes_the_program_smaller_and_it_still_fails() -> None:
    prog = Program.parse(BIG)
    cfg = FuzzConfig(("speculative",), "no_pte_none_recheck", 60, 0)
    res = run_program(prog, cfg)
    assert not res.ok
    small = shrink(res, cfg, max_candidates=60)
    assert small.program.size() < prog.size()
    assert len(small.program.threads) == 2
    assert sum(len(t.ops) for t in small.program.threads) == 2
    assert small.execution is not None and small.execution.failure is not None
    assert len(small.choices) <= len(res.choices)
    reg = Regression(small.program, "speculative", cfg.mutant, small.choices)
    again = reg.replay()
    assert again.failure is not None and again.failure.kind == res.kind
    assert reg.replay(mutant=None, strict=False).failure is None


def test_interrupt_carries_the_partial_result() -> None:
    seen = []

    def progress(r: loop.FuzzResult) -> None:
        seen.append(r.programs)
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        fuzz(FuzzConfig(("classic",), None, 3, 0), programs=100, progress=progress)
    assert info.value.result.interrupted and info.value.result.programs == 8 == seen[0]


# ------------------------------------------------------------------ the CLI
@pytest.mark.parametrize("argv,arg", [
    (["--programs", "0"], "--programs"),
    (["--programs", "many"], "--programs"),
    (["--budget", "-3"], "--budget"),
    (["--budget", "inf"], "--budget"),
    (["--schedules-per-program", "2"], "--schedules-per-program"),
    (["--jobs", "0"], "--jobs"),
    (["--backend", "foo"], "--backend"),
    (["--address", "127.0.0.1:1"], "--address"),
    (["--backend", "ray", "--address", "no-port"], "--address"),
    (["--seed", "-1"], "--seed"),
    (["--mutant", "no_seq2"], "--mutant"),
    (["--protocol", "fast"], "--protocol"),
    (["--step-limit", "10"], "--step-limit"),
    (["--replay", "nonsense"], "--replay"),
    (["--replay", "win=1 file=0 | - | P: write(0) @ speculative @ 0.x"], "--replay"),
    (["--replay", "win=1 file=0 | - | P: write(0) @ slow @ 0"], "--replay"),
    (["--replay", "win=1 file=0 | - | P: write(0) @ speculative @ 0", "--seed", "3"], "--seed"),
])
def test_bad_input_is_refused_naming_the_argument(argv: list[str], arg: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", *argv]) == 2
    err = capsys.readouterr().err
    assert arg in err and len(err.strip().splitlines()) == 1


def test_cli_finds_a_mutant_saves_it_and_replays_it(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--mutant", "no_pte_none_recheck", "--programs", "8", "--seed", "0",
                 "--schedules-per-program", "30", "--save", str(tmp_path), "--no-shrink",
                 "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    v = data["violation"]
    assert v["kind"] == "property" and v["program_index"] == 5 and data["programs"] == 6
    files = list(tmp_path.glob("*.json"))
    assert [str(f) for f in files] == [v["saved"]]
    reg = load(files[0])
    assert reg.mutant == "no_pte_none_recheck" and reg.program.text() == v["program"] \
        == v["found_program"] and v["shrink"] is None
    assert main(["fuzz", "--replay", str(files[0])]) == 1
    assert "VIOLATION property" in capsys.readouterr().out
    line = v["replay"].split("'")[1]
    assert main(["fuzz", "--replay", line.replace("+no_pte_none_recheck", "")]) == 0
    assert "no violation" in capsys.readouterr().out


def test_cli_no_violation_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--protocol", "classic", "--programs", "3",
                 "--schedules-per-program", "6"]) == 0
    out = capsys.readouterr().out
    assert "fuzz classic: no violation — 3 programs" in out and "coverage growth" in out


def test_cli_ctrl_c_exits_130_with_partial_results(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def interrupted(unit: tuple[Program, FuzzConfig]) -> None:
        calls.append(unit)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return run_program(*unit)  # type: ignore[return-value]

    monkeypatch.setattr(loop, "run_unit", interrupted)
    assert main(["fuzz", "--protocol", "classic", "--programs", "20",
                 "--schedules-per-program", "3", "--json"]) == 130
    data = json.loads(capsys.readouterr().out)
    assert data["interrupted"] and data["programs"] == 3 and data["stopped"] == "interrupted"


def test_fuzz_program_checks_like_the_races() -> None:
    """A fuzz program is checked by the races' own properties: a correct
    protocol passes, and the step invariant is the races' one."""
    prog = Program.parse("win=2 file=0 | P.mmap(0,2,rw,anon,private,fixed,0) P.write(0) | "
                         "P: write(1) | P: mprotect(0,2,r)")
    scen = build(prog, "speculative")
    assert explore(scen, strategy="dfs", max_schedules=400, budget_seconds=None).ok
    bad = explore(build(prog, "pervma", "pervma_mprotect_no_vma_lock"), strategy="dfs",
                  max_schedules=2000, budget_seconds=None, minimize=False)
    assert not bad.ok and bad.failure is not None


def test_the_time_cap_stops_between_programs() -> None:
    out = fuzz(FuzzConfig(("classic",), None, 3, 0), seconds=1e-9)
    assert out.capped and out.programs == 1 and out.stop_reason() == "time cap"
    with pytest.raises(ValueError):
        fuzz(FuzzConfig(("classic",), None, 3, 0))


# ------------------------------------------------- kswapd and memory pressure
PRESSED = ("win=4 file=0 free=2 kswapd | P.mmap(0,4,rw,anon,private,fixed,0) P.write(0) P.write(1) "
           "P.write(3) | P: write(2) read(0) | P: write(1) read(3)")


def test_pressure_and_kswapd_are_part_of_a_program() -> None:
    prog = Program.parse(PRESSED)
    assert (prog.free, prog.kswapd) == (2, True)
    assert Program.parse(prog.text()) == prog and loads(dumps(prog)) == prog
    # a program without them prints and serialises as before
    plain = Program.parse("win=1 file=0 | - | P: write(0)")
    assert plain.text() == "win=1 file=0 | - | P: write(0)" and "free" not in plain.to_json()
    with pytest.raises(ProgramError, match="kswapd needs memory pressure"):
        Program.parse("win=1 file=0 kswapd | - | P: write(0)")
    with pytest.raises(ProgramError, match="free must be"):
        Program.parse("win=1 file=0 free=99 | - | P: write(0)")
    progs = _programs(200)
    assert any(p.kswapd for p in progs) and any(p.free and not p.kswapd for p in progs)


def test_faults_under_pressure_reclaim_directly_beside_kswapd() -> None:
    res = run_program(Program.parse(PRESSED), FuzzConfig(("classic",), None, 30))
    assert res.ok
    kinds = {c[1] for c in res.coverage}
    assert "anon+direct_reclaim+kswapd_wake" in kinds                   # the allocation reclaimed
    assert any("swapin" in k for k in kinds)                            # and a page came back
    assert any(c[3] == "kswapd" for c in res.coverage)                  # kswapd in flight meanwhile


def test_the_shrinker_drops_kswapd_and_the_pressure_when_they_do_not_matter() -> None:
    prog = Program.parse("win=2 file=0 free=3 kswapd | P.mmap(0,2,rw,anon,private,fixed,0) | "
                         "P: read(1) | P: write(1)")
    cfg = FuzzConfig(("speculative",), "no_pte_none_recheck", 30)
    res = run_program(prog, cfg)
    assert not res.ok
    small = shrink(res, cfg)
    assert (small.program.free, small.program.kswapd) == (0, False)
