"""Perfetto traces of simulated runs (sim/trace.py): valid Trace Event
files, per-CPU slices that add up to the engine's busy time exactly, lock
tracks that are the engine's own lock statistics, faults named by the path
they took, and a size bounded by the event budget."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from specfault.cli import main
from specfault.config import Config
from specfault.report.perfetto import TraceWriter, load, ns, validate
from specfault.sim.cost import CostProfile
from specfault.sim.trace import SimTrace
from specfault.sim.workloads import build

#: every cost a whole number of ns (4096 B / 128 GB/s = 32 ns per page):
#: simulated times are integers, so the trace's nanoseconds are exact
WHOLE_NS = CostProfile(dram_gbps=128.0)
PROTOCOLS = ("classic", "speculative", "pervma", "dufour")


def traced(tmp_path: Path, workload: str, protocol: str, cpus: int, budget: int = 400_000,
           profile: CostProfile | None = WHOLE_NS, **params: Any) -> tuple[Any, Any, Path]:
    """Run ``workload`` traced; returns (built, loaded trace, path)."""
    path = tmp_path / f"{workload}-{protocol}.json"
    b = build(workload, protocol, cpus, profile=profile, config=Config(), **params)
    with TraceWriter(path, budget=budget) as w:
        tr = SimTrace(b.engine, w, f"{workload} {protocol}")
        try:
            b.engine.run()
        finally:
            b.engine.close()
            tr.close()
    return b, load(path), path


def top_level_per_cpu(t: Any, pid: int, ncpus: int) -> list[int]:
    return [sum(s.dur for s in t.track(pid, c + 1) if s.depth == 0) for c in range(ncpus)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cpu_slices_add_up_to_busy_time_exactly(tmp_path: Path, protocol: str) -> None:
    b, t, path = traced(tmp_path, "pft", protocol, 8, faults=1600)
    assert validate(path) == []
    busy = [c.busy for c in b.engine.cpus]
    assert all(x > 0 and x == int(x) for x in busy)
    assert top_level_per_cpu(t, 1, 8) == busy


def test_cpu_slices_add_up_with_writers_sleepers_and_context_switches(tmp_path: Path) -> None:
    # spf_test: 20 threads on 4 CPUs, mmap writers, sleeping waiters, switches
    b, t, path = traced(tmp_path, "spf_test", "classic", 4, faults=400)
    assert validate(path) == []
    assert top_level_per_cpu(t, 1, 4) == [c.busy for c in b.engine.cpus]
    names = Counter(s.name for s in t.slices if s.tid <= 4)
    assert names["context switch"] > 0 and names["sys_mmap"] > 0 and names["mmap_lock write section"] > 0
    # nested slices are inside top-level ones of the same CPU (depth from the trace itself)
    assert all(s.depth == 0 for s in t.slices if s.name in ("context switch", "user") and s.tid <= 4)


def test_float_costs_stay_within_a_nanosecond_per_slice(tmp_path: Path) -> None:
    b, t, path = traced(tmp_path, "app_launch", "speculative", 4, profile=None, faults=400)
    assert validate(path) == []
    for c, total in zip(b.engine.cpus, top_level_per_cpu(t, 1, 4), strict=True):
        nslices = sum(1 for s in t.track(1, c.id + 1) if s.depth == 0)
        assert abs(total - c.busy) <= nslices


def test_lock_tracks_are_the_engines_lock_statistics(tmp_path: Path) -> None:
    b, t, path = traced(tmp_path, "spf_test", "classic", 4, faults=400)
    eng = b.engine
    holds = [s for s in t.slices if s.cat == "mmap_lock" and t.threads[(s.pid, s.tid)].startswith("mmap_lock hold")]
    waits = [s for s in t.slices if s.cat == "mmap_lock" and t.threads[(s.pid, s.tid)].startswith("mmap_lock wait")]
    assert sorted(s.dur for s in holds) == sorted(ns(h) for h in eng.lock_holds if ns(h) > 0)
    assert sorted(s.dur for s in waits) == sorted(ns(x) for x in eng.lock_waits if ns(x) > 0)
    assert waits, "spf_test's writers make faults wait"
    # a flow arrow from each release to the waiter it woke
    flows = Counter(e["ph"] for e in t.events if e["ph"] in "sf")
    assert flows["s"] == flows["f"] > 0


def test_faults_are_named_by_their_path(tmp_path: Path) -> None:
    def faults(t: Any) -> dict[int, str]:
        return {s.args["fault #"]: s.name for s in t.slices if s.cat == "fault"}

    b, t, _ = traced(tmp_path, "ebizzy", "speculative", 8, faults=1500)
    f = faults(t)
    vs = b.engine.kernel.vmstat
    assert len(f) == b.ctx.faults
    aborted = [n for n in f.values() if n.startswith("fault: speculative aborted (SPF_ABORT_")]
    assert len(aborted) == vs["spf_abort"] > 0
    assert sum(1 for n in f.values() if n == "fault: speculative") == vs["spf_success"]
    phases = Counter(s.name.split(":")[0] for s in t.slices if s.cat == "phase")
    assert phases["classic fallback (mmap_lock)"] == sum(
        1 for s in t.slices if s.cat == "phase" and s.name.startswith("classic fallback"))
    b, t, _ = traced(tmp_path, "pft", "pervma", 4, faults=400)
    assert set(faults(t).values()) == {"fault: VMA-locked"}
    assert len(faults(t)) == b.ctx.faults
    b, t, _ = traced(tmp_path, "pft", "classic", 4, faults=400)
    assert set(faults(t).values()) == {"fault: classic"}


def test_observer_is_off_by_default(tmp_path: Path) -> None:
    b = build("pft", "speculative", 2, faults=50, config=Config())
    assert b.engine.observer is None
    assert "count" not in b.engine.kernel.__dict__
    b.engine.run()
    b.engine.close()
    b2, _, _ = traced(tmp_path, "pft", "speculative", 2, faults=50)
    assert b2.engine.observer is None and "count" not in b2.engine.kernel.__dict__   # detached
    assert b2.engine.kernel.vmstat["spf_attempt"] > 0     # counting still went to the kernel


def test_the_event_budget_bounds_the_trace_and_keeps_busy_time(tmp_path: Path) -> None:
    budget = 2000
    b, t, path = traced(tmp_path, "pft", "speculative", 8, budget=budget, faults=6000)
    assert validate(path) == []
    run = t.metadata["runs"][0]
    assert "detail_until_us" in run and "aggregated" in run["detail"]
    agg = [s for s in t.slices if s.name == "busy (aggregated)"]
    assert agg
    # past the budget: the slices still open then, one aggregated slice per
    # CPU and bucket (at most 256 buckets), the counters
    assert len(t.events) <= budget + 200 + 8 * 256 + 3 * 256
    assert top_level_per_cpu(t, 1, 8) == [c.busy for c in b.engine.cpus]
    assert sum(s.args["faults ended"] for s in agg) + len(
        {s.args["fault #"] for s in t.slices if s.cat == "fault"}) >= b.ctx.faults


def test_bench_trace_pft_48_cpus_four_protocols(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pft48.json"
    assert main(["bench", "-w", "pft", "--cpus", "48", "--faults", "4800", "--protocols",
                 ",".join(PROTOCOLS), "--trace", str(path), "--json"]) == 0
    capsys.readouterr()
    assert validate(path) == []
    t = load(path)
    assert sorted(t.processes.values()) == sorted(f"pft {p} 48 CPUs" for p in PROTOCOLS)
    assert [r["title"] for r in t.metadata["runs"]] == [f"pft {p} 48 CPUs" for p in PROTOCOLS]
    assert t.metadata["command"].startswith("specfault bench -w pft --cpus 48")
    for pid in t.processes:
        cpus = [t.tid(pid, f"CPU {i}") for i in range(48)]
        assert cpus == list(range(1, 49))
        counters = {e["name"] for e in t.events if e["ph"] == "C" and e["pid"] == pid}
        assert counters == {"faults/s", "aborts/s", "free frames"}


def test_trace_path_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--cpus", "1", "--trace", str(tmp_path / "nodir" / "t.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "--cpus", "1", "--trace", str(tmp_path / "t.txt")]) == 2
    assert "extension" in capsys.readouterr().err
