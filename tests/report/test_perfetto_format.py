"""The trace writer writes exact nanoseconds, and the checker finds what
the Trace Event Format and Perfetto's importer refuse."""

from __future__ import annotations

import json
from pathlib import Path

from specfault.report.perfetto import TraceWriter, load, ns, us, validate


def test_times_are_exact_nanoseconds() -> None:
    assert us(1234) == "1.234" and us(1000) == "1" and us(5) == "0.005" and us(0) == "0"
    assert ns(2.5) == 3 and ns(2.4999) == 2 and ns(1e9 + 0.5) == 1_000_000_001


def test_a_good_trace_reads_back(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    with TraceWriter(p, metadata={"command": "x"}) as w:
        pid = w.process("run")
        w.thread(pid, 1, "CPU 0")
        w.slice(pid, 1, 1000, 5001, "outer", "a")
        w.slice(pid, 1, 1000, 5001, "same span", "a")
        w.slice(pid, 1, 2000, 3001, "inner", "a", {"k": "µ→"})
        w.slice(pid, 2, 3000, 10, "other", "a")
        w.flow((pid, 1, 2500), (pid, 2, 3005), "wakes", "a")
        w.counter(pid, 0, "free frames", 12)
        w.instant(pid, 1, 3000, "mark", "a")
    assert "\\u" not in p.read_text(encoding="utf-8")         # Perfetto's tokenizer takes no \u escapes
    assert validate(p) == []
    t = load(p)
    assert t.metadata["command"] == "x"
    assert {s.name: (s.ts, s.dur, s.depth) for s in t.slices} == {
        "outer": (1000, 5001, 0), "same span": (1000, 5001, 1), "inner": (2000, 3001, 2), "other": (3000, 10, 0)}


def _bad(tmp_path: Path, events: list[dict[str, object]]) -> list[str]:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"traceEvents": events}))
    return validate(p)


def test_the_checker_finds_what_viewers_refuse(tmp_path: Path) -> None:
    x = {"ph": "X", "pid": 1, "tid": 1, "name": "a", "cat": "c"}
    assert any("without nesting" in p for p in _bad(tmp_path, [
        {**x, "ts": 0, "dur": 10}, {**x, "ts": 5, "dur": 10}]))
    assert any("needs s and f" in p for p in _bad(tmp_path, [
        {**x, "ts": 0, "dur": 10}, {"ph": "s", "pid": 1, "tid": 1, "ts": 1, "id": 7, "name": "w", "cat": "c"}]))
    assert any("inside no slice" in p for p in _bad(tmp_path, [
        {**x, "ts": 0, "dur": 10},
        {"ph": "s", "pid": 1, "tid": 1, "ts": 11, "id": 7, "name": "w", "cat": "c"},
        {"ph": "f", "bp": "e", "pid": 1, "tid": 1, "ts": 5, "id": 7, "name": "w", "cat": "c"}]))
    assert any("unknown ph" in p for p in _bad(tmp_path, [{**x, "ph": "Q", "ts": 0}]))
    assert any("negative dur" in p for p in _bad(tmp_path, [{**x, "ts": 0, "dur": -1}]))
    assert any("counter args" in p for p in _bad(tmp_path, [
        {"ph": "C", "pid": 1, "ts": 0, "name": "n", "args": {"v": "high"}}]))
    assert any("ts missing" in p for p in _bad(tmp_path, [{**x, "dur": 1}]))
