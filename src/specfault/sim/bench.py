"""Running workloads: one run, and the side-by-side comparison of protocols.

``compare("pft", cpus=[1, 8, 48], protocols=["classic", "speculative",
"pervma"], faults=20_000)`` runs every (protocol, CPU count) pair with the
same workload parameters and cost profile and returns a :class:`Comparison`:
its ``runs`` (one :class:`~specfault.sim.metrics.RunResult` each), and
``ratio(protocol, cpus)`` — the protocol's figure of merit over classic's at
that CPU count (throughput for throughput workloads, 1/elapsed for
completion-time workloads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from specfault.config import Config
from specfault.report.perfetto import TraceWriter
from specfault.sim.cost import CostProfile
from specfault.sim.metrics import RunResult, collect
from specfault.sim.workloads import WORKLOADS, build

#: every protocol the simulator runs (``dufour``: Laurent Dufour's SPF)
PROTOCOLS = ("classic", "speculative", "pervma", "dufour")
#: what ``compare`` and ``specfault bench`` run unless told otherwise
DEFAULT_PROTOCOLS = ("classic", "speculative", "pervma")
#: workloads whose figure is the time to finish a fixed job (smaller is better)
ELAPSED = frozenset({"spf_test", "app_launch"})


def knob_config(knobs: dict[str, Any] | None) -> Config:
    """The Config a run's ``knobs`` (by name, see config.KNOBS) describe;
    unknown names and bad values raise before anything is simulated."""
    return Config().with_(**(knobs or {}))


def run(workload: str, protocol: str, cpus: int, profile: CostProfile | None = None,
        knobs: dict[str, Any] | None = None, trace: TraceWriter | None = None,
        trace_budget: int | None = None, **params: Any) -> RunResult:
    """Simulate one workload under one protocol on ``cpus`` CPUs, the
    machine configured with ``knobs`` (names from config.KNOBS; the run's
    protocol, CPU count and memory size override theirs).  With ``trace``,
    the run is written to it as one process (sim/trace.py), in detail for
    at most ``trace_budget`` events (default: the writer's whole budget)."""
    built = build(workload, protocol, cpus, profile=profile, config=knob_config(knobs), **params)
    tracer = None
    if trace is not None:
        from specfault.sim.trace import SimTrace
        tracer = SimTrace(built.engine, trace, f"{workload} {protocol} {cpus} CPUs", trace_budget)
    try:
        built.engine.run()
    finally:
        built.engine.close()
        if tracer is not None:
            tracer.close()
    return collect(workload, protocol, cpus, built)


@dataclass
class Comparison:
    workload: str
    params: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)

    def get(self, protocol: str, cpus: int) -> RunResult | None:
        for r in self.runs:
            if r.protocol == protocol and r.cpus == cpus:
                return r
        return None

    def merit(self, r: RunResult) -> float:
        """Bigger is better: throughput, or 1/elapsed for fixed jobs."""
        if self.workload in ELAPSED:
            return 1.0 / r.wall_us if r.wall_us else 0.0
        if self.workload == "mmap1":
            return r.ops_per_s
        if self.workload == "pressure":           # the writer's tail latency
            p99 = r.writer_lat["p99"]
            return 1.0 / p99 if p99 else 0.0
        return r.faults_per_s

    def ratio(self, protocol: str, cpus: int, base: str = "classic") -> float | None:
        a, b = self.get(protocol, cpus), self.get(base, cpus)
        if a is None or b is None or not self.merit(b):
            return None
        return self.merit(a) / self.merit(b)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workload": self.workload, "params": self.params,
                               "runs": [r.to_dict() for r in self.runs]}
        out["ratios"] = [{"protocol": r.protocol, "cpus": r.cpus,
                          "vs_classic": self.ratio(r.protocol, r.cpus)} for r in self.runs]
        return out


def compare(workload: str, cpus: Iterable[int] = (1, 4, 16, 48),
            protocols: Iterable[str] = DEFAULT_PROTOCOLS, profile: CostProfile | None = None,
            progress: Callable[[str], None] | None = None, knobs: dict[str, Any] | None = None,
            trace: TraceWriter | None = None, **params: Any) -> Comparison:
    """Run ``workload`` under each protocol at each CPU count (see module
    doc); with ``trace``, every run is traced into it, each in detail for
    an equal share of its event budget."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    protocols = list(protocols)
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r}; choose from {', '.join(PROTOCOLS)}")
    cpus = list(cpus)
    if not cpus or any(c < 1 for c in cpus):
        raise ValueError("cpus must be positive integers")
    knob_config(knobs)                   # refuse a bad knob before the first run
    cmp = Comparison(workload, dict(params, **({"knobs": dict(knobs)} if knobs else {})))
    share = trace.budget // (len(cpus) * len(protocols)) if trace is not None else None
    for n in cpus:
        for p in protocols:
            cmp.runs.append(run(workload, p, n, profile=profile, knobs=knobs, trace=trace,
                                trace_budget=share, **params))
            if progress is not None:
                progress(f"{workload} {p} {n} CPUs")
    return cmp
