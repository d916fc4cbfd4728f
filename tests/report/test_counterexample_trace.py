"""Counterexample traces: every mutant's saved kill (tests/regressions/)
replayed into a trace that validates, one track per actor, the violating
step marked, the replay line in the metadata; ``check --trace``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specfault.check.explore import replay
from specfault.check.scenario import lookup
from specfault.check.schedule import Schedule
from specfault.cli import main
from specfault.report.perfetto import STEP_NS, TraceWriter, load, validate, write_counterexample

REGRESSIONS = sorted((Path(__file__).resolve().parent.parent / "regressions").glob("*.schedule"))


def test_there_is_a_kill_per_mutant() -> None:
    """One per mutant of the kill table (those left to the fuzzer,
    ``expect="fuzz"``, have none)."""
    from specfault.check.mutants import MUTANTS
    assert {p.stem for p in REGRESSIONS} == {n for n, m in MUTANTS.items() if m.expect == "scenarios"}


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_each_mutants_counterexample_as_a_trace(tmp_path: Path, path: Path) -> None:
    line = path.read_text().strip()
    sched = Schedule.parse(line)
    ex = replay(lookup(sched.scenario), sched)
    assert ex.failure is not None
    out = tmp_path / "cx.json"
    with TraceWriter(out) as w:
        write_counterexample(w, ex, sched)
    assert validate(out) == []
    t = load(out)
    (entry,) = t.metadata["counterexamples"]
    assert entry["schedule"] == line
    assert entry["replay"] == sched.replay_command()
    pid = entry["pid"]
    # one track per actor that took a step, named with its CPU
    actors = {a for a, _ in ex.trace}
    for a in actors:
        name = t.threads[(pid, a + 1)]
        assert name == "rcu callbacks" if a == ex.rcu_actor else name == f"cpu{ex.tasks[a].cpu.id}: {ex.tasks[a].name}"
    ops = [s for s in t.slices if s.cat in ("op", "violation")]
    assert len(ops) == len(ex.trace)
    assert [s.ts for s in sorted(ops, key=lambda s: s.ts)] == [i * STEP_NS for i in range(len(ex.trace))]
    (mark,) = [e for e in t.events if e["ph"] == "i" and e["name"] == f"VIOLATION {ex.failure.kind}"]
    bad = [s for s in ops if s.cat == "violation"]
    if ex.failure.actor is None:        # found by the final check, after the last step
        assert bad == [] and entry["violation"]["step"] == -1
        assert t.threads[(pid, mark["tid"])] == "schedule"
    else:
        (b,) = bad
        assert b.name.startswith("!! ") and b.args["step"] == ex.failure.step - 1 == entry["violation"]["step"]
        assert b.tid == ex.failure.actor + 1 == mark["tid"]
        assert ex.failure.kind in b.args["violation"]
    pre = {s.args["step"] for s in ops if s.args.get("preempted")}
    assert pre == set(ex.preempted_at)
    (sched_slice,) = [s for s in t.slices if s.cat == "schedule"]
    assert sched_slice.name == f"replay: {sched.replay_command()}"


def test_check_replay_trace_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = (REGRESSIONS[0]).read_text().strip()
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    assert main(["check", "--replay", line, "--trace", str(out), "--html", str(page), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert validate(out) == []
    t = load(out)
    assert t.metadata["counterexamples"][0]["schedule"] == line == data["schedule"]
    assert page.exists()


def test_check_exploration_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.json"
    code = main(["check", "--scenario", "fault-vs-munmap", "--mutant", "no_seq2_check", "--strategy", "pct",
                 "--schedules", "3000", "--trace", str(out)])
    assert code == 1
    capsys.readouterr()
    assert validate(out) == []
    (entry,) = load(out).metadata["counterexamples"]
    assert entry["scenario"] == "mm.fault-vs-munmap@speculative+no_seq2_check"
    ex = replay(lookup(entry["scenario"]), Schedule.parse(entry["schedule"]))
    assert ex.failure is not None and ex.failure.kind == entry["violation"]["kind"]
