"""The rest of the demo tour: check the speculative protocol on the core
races, kill one mutant and show its counterexample, and compare the four
protocols on the simulator (app_launch, pft) with plots.  Every figure is
computed as the tour runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

CORE_RACES = ("fault-vs-munmap", "fault-vs-mprotect", "two-faults-same-page", "cow-vs-fork",
              "fault-vs-mmap-fixed")
DEMO_MUTANT = "no_seq2_check"


def check_core(emit: Callable[[str, Any], None]) -> list[dict[str, Any]]:
    """Exhaustive DFS up to one preemption (54-218 schedules per race; the
    budget of 20,000 is never reached), plus 300 PCT schedules, of the
    speculative protocol on each core race: budgets in schedules, so the
    tour prints the same figures on every machine."""
    from specfault.check.explore import ExploreConfig, explore
    from specfault.check.scenarios import build

    rows = []
    for spec in CORE_RACES:
        dfs = explore(build(spec, "speculative"),
                      ExploreConfig(strategy="dfs", max_preemptions=1, max_schedules=20_000,
                             budget_seconds=None))
        pct = explore(build(spec, "speculative"),
                      ExploreConfig(strategy="pct", max_schedules=300, budget_seconds=None, seed=1))
        row = {"scenario": spec, "ok": dfs.ok and pct.ok, "dfs_schedules": dfs.schedules,
               "dfs_exhausted": dfs.exhausted, "pct_schedules": pct.schedules,
               "seconds": round(dfs.elapsed + pct.elapsed, 2)}
        rows.append(row)
        emit("check", row)
    return rows


def kill_one(emit: Callable[[str, Any], None], mutant: str = DEMO_MUTANT) -> dict[str, Any]:
    """Hunt ``mutant`` with the portfolio; emit ("kill", (summary, report,
    execution, schedule)) — the counterexample replayed from its schedule,
    its report counting the schedules of the whole hunt (every strategy
    the portfolio tried), the number the summary gives."""
    from specfault.check.explore import replay
    from specfault.check.mutants import MUTANTS
    from specfault.check.portfolio import kill
    from specfault.check.report import failure_report
    from specfault.check.scenario import lookup
    from specfault.check.schedule import Schedule

    k = kill(mutant)
    out = {"mutant": mutant, "breaks": MUTANTS[mutant].breaks, **k.to_json()}
    ex = sched = None
    report = k.report
    if k.killed:
        sched = Schedule.parse(k.schedule)
        ex = replay(lookup(sched.scenario), sched)
        report = failure_report(ex, sched, explored=k.schedules)
    emit("kill", (out, report, ex, sched))
    return out


#: the simulator part of the tour: (workload, CPU counts, faults)
SIM_PLAN: list[tuple[str, list[int], int]] = [("app_launch", [8], 3000), ("pft", [1, 8, 32], 8000)]


def sim_runs() -> int:
    """How many simulated runs :func:`simulate` makes (for a progress bar)."""
    from specfault.sim import PROTOCOLS

    return sum(len(cpus) for _, cpus, _ in SIM_PLAN) * len(PROTOCOLS)


def simulate(emit: Callable[[str, Any], None], out_dir: Path,
             progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every protocol (classic, speculative, pervma, dufour) on app_launch
    and pft; a PNG plot of each in ``out_dir``; ``progress(what)`` after
    each run."""
    from specfault import sim
    from specfault.sim import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for workload, cpus, faults in SIM_PLAN:
        cmp = sim.compare(workload, cpus=cpus, faults=faults, protocols=sim.PROTOCOLS, progress=progress)
        path = plots.plot(cmp, str(out_dir / f"{workload}.png"))
        runs: list[dict[str, Any]] = []
        summary: dict[str, Any] = {"workload": workload, "plot": path, "runs": runs}
        for r in cmp.runs:
            runs.append({
                "protocol": r.protocol, "cpus": r.cpus, "faults_per_s": round(r.faults_per_s),
                "wall_ms": round(r.wall_us / 1e3, 3), "ratio_vs_classic": cmp.ratio(r.protocol, r.cpus),
                "abort_rate": r.abort_rate, "fault_p99_us": r.fault_lat["p99"],
                "writer_p99_us": r.writer_lat["p99"], "lock_wait_p99_us": r.lock_wait["p99"]})
        results.append(summary)
        emit("sim", (cmp, path))
    return results
