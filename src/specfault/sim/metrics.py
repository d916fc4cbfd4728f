"""What a simulated run reports: one :class:`RunResult` per (workload,
protocol, CPU count), plain data so it serialises to JSON.

faults/s are per simulated wall-second (``faults / wall``) and per busy
CPU-second (``faults / cpu_busy``); latencies are in microseconds with
p50/p99/max; aborts are the SPF / VMA-lock counters by reason, and
``abort_rate`` is ``spf_abort / spf_attempt`` (speculative, dufour) or
``(vma_lock_abort + vma_lock_retry) / attempts`` (pervma).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from specfault.sim.workloads import Built


def dist(values: list[float], scale: float = 1e-3) -> dict[str, float]:
    """p50/p99/max/mean of ``values`` (ns) in µs (``scale``)."""
    if not values:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    v = sorted(values)
    n = len(v)
    return {"n": n, "p50": v[n // 2] * scale, "p99": v[min(n - 1, (n * 99) // 100)] * scale,
            "max": v[-1] * scale, "mean": sum(v) / n * scale}


@dataclass
class RunResult:
    workload: str
    protocol: str
    cpus: int
    threads: int
    faults: int
    syscalls: int
    wall_us: float
    faults_per_s: float
    faults_per_cpu_s: float
    ops_per_s: float
    fault_lat: dict[str, float]
    writer_lat: dict[str, float]
    lock_wait: dict[str, float]
    lock_hold: dict[str, float]
    abort_rate: float
    aborts: dict[str, int]
    counters: dict[str, int]
    transfers_per_fault: float
    cpu_busy_us: float
    reclaims: int
    steps: int
    #: sorted fault latencies (µs), subsampled, for CDF plots
    cdf: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COUNTERS = ("pgfault", "spf_attempt", "spf_abort", "spf_success", "vma_lock_success",
             "vma_lock_abort", "vma_lock_retry", "vma_lock_miss", "tlb_flush",
             "allocstall", "pgscan_direct", "pgscan_kswapd", "pgsteal_direct", "pgsteal_kswapd",
             "pswpin", "pswpout", "pgmajfault")


def collect(name: str, protocol: str, cpus: int, built: Built, cdf_points: int = 200) -> RunResult:
    eng = built.engine
    ctx = built.ctx
    vs = eng.kernel.vmstat
    wall = eng.wall() or 1.0
    busy = sum(c.busy for c in eng.cpus) or 1.0
    faults = ctx.faults
    aborts = {k: v for k, v in vs.items() if v and k.startswith("SPF_ABORT")}
    if protocol == "speculative" or protocol == "dufour":
        rate = vs.get("spf_abort", 0) / vs["spf_attempt"] if vs.get("spf_attempt") else 0.0
    elif protocol == "pervma":
        tried = vs.get("vma_lock_success", 0) + vs.get("vma_lock_abort", 0) + vs.get("vma_lock_retry", 0)
        rate = (vs.get("vma_lock_abort", 0) + vs.get("vma_lock_retry", 0)) / tried if tried else 0.0
        aborts = {k: vs[k] for k in ("vma_lock_abort", "vma_lock_retry", "vma_lock_miss") if vs.get(k)}
    else:
        rate = 0.0
    lat = sorted(ctx.fault_lat)
    step = max(1, len(lat) // cdf_points)
    cdf = [x * 1e-3 for x in lat[::step]] + ([lat[-1] * 1e-3] if lat else [])
    return RunResult(
        workload=name, protocol=protocol, cpus=cpus, threads=built.threads, faults=faults,
        syscalls=ctx.syscalls, wall_us=wall * 1e-3,
        faults_per_s=faults / wall * 1e9, faults_per_cpu_s=faults / busy * 1e9,
        ops_per_s=(faults + ctx.syscalls) / wall * 1e9,
        fault_lat=dist(ctx.fault_lat), writer_lat=dist(ctx.writer_lat),
        lock_wait=dist(eng.lock_waits), lock_hold=dist(eng.lock_holds),
        abort_rate=rate, aborts=aborts,
        counters={k: vs.get(k, 0) for k in _COUNTERS},
        transfers_per_fault=eng.cost.transfers / faults if faults else 0.0,
        cpu_busy_us=busy * 1e-3, reclaims=vs.get("allocstall", 0), steps=eng.steps, cdf=cdf,
    )
