"""The SPF and VMA-lock counters add up, and every abort reason the model
can produce is reached by some scenario.

Unreachable in the model, by construction: SPF_ABORT_USERFAULTFD (no
userfaultfd), SPF_ABORT_SWAP (no swap), SPF_ABORT_FAULT (no fault type is
refused mid-way except those counted otherwise), SPF_ABORT_PTE_MAP_LOCK_PMD
(a PMD changes only under mmap_lock held for write, which the SEQ1 check
sees first; Linux's khugepaged collapse is not modelled).
"""

from __future__ import annotations

from typing import Any

import pytest

import specfault as sf
from specfault.check.explore import ExploreConfig, explore
from specfault.check.scenarios import build
from specfault.mm.kernel import SPF_ABORT_REASONS

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
UNREACHABLE = {"SPF_ABORT_USERFAULTFD", "SPF_ABORT_SWAP", "SPF_ABORT_FAULT",
               "SPF_ABORT_PTE_MAP_LOCK_PMD"}


def add_up(v: dict[str, int]) -> None:
    assert v["spf_attempt"] == v["spf_success"] + v["spf_abort"], v
    assert v["spf_abort"] == sum(v[r] for r in SPF_ABORT_REASONS), v


@pytest.mark.parametrize("protocol", ["speculative", "dufour"])
def test_sequential_abort_reasons(protocol: str) -> None:
    m = sf.Machine(fault_protocol=protocol)
    p = m.spawn()
    p.thread()                                    # mm_users 2: speculation allowed
    seen: set[str] = set()

    def step(fn: Any) -> None:
        before = m.vmstat()
        try:
            fn()
        except sf.SignalError:
            pass
        after = m.vmstat()
        seen.update(r for r in SPF_ABORT_REASONS if after[r] > before[r])
        add_up(after)

    a = p.mmap(0, 4 * 4096, RW, ANON)
    step(lambda: p.write(a, b"x"))                # empty page tables: SPF_ABORT_PUD
    b = p.mmap(a - (4 << 20), 4096, RW, ANON | sf.MAP_FIXED)
    p.write(b, b"x")                              # (fresh VMA, no anon_vma)
    step(lambda: p.write(a + 4096, b"y"))         # tables exist: handled speculatively
    c = p.mmap(a - (2 << 20), 4096, RW, ANON | sf.MAP_FIXED)
    step(lambda: p.read(c, 1))                    # no PTE table for that 2 MiB: SPF_ABORT_PMD
    d = p.mmap(a - 8 * 4096, 4096, RW, ANON | sf.MAP_FIXED)
    step(lambda: p.write(d, b"z"))                # same table, new VMA: SPF_ABORT_ANON_VMA
    step(lambda: p.read(a - 4 * 4096, 1))         # hole: SPF_ABORT_UNMAPPED (then SIGSEGV)
    p.mprotect(a, 4096, sf.PROT_READ)
    step(lambda: p.write(a, b"w"))                # read-only: SPF_ABORT_ACCESS_ERROR
    m.create_file("/f", b"f" * 8192)
    f = p.mmap(0, 8192, sf.PROT_READ, sf.MAP_PRIVATE, p.open("/f"))
    step(lambda: p.read(f, 1))                    # file VMA: SPF_ABORT_NO_SPECULATE
    assert {"SPF_ABORT_PUD", "SPF_ABORT_PMD", "SPF_ABORT_ANON_VMA", "SPF_ABORT_UNMAPPED",
            "SPF_ABORT_ACCESS_ERROR", "SPF_ABORT_NO_SPECULATE"} <= seen, seen
    assert m.vmstat()["spf_success"] > 0


@pytest.mark.parametrize("protocol", ["speculative", "dufour"])
def test_single_user_mm_never_speculates(protocol: str) -> None:
    m = sf.Machine(fault_protocol=protocol)
    p = m.spawn()
    a = p.mmap(0, 4096, RW, ANON)
    p.write(a, b"x")
    assert m.vmstat()["spf_attempt"] == 0


def _explore_collecting(spec: str, protocol: str, n: int, seen: set[str],
                        totals: list[dict[str, int]]) -> None:
    scen = build(spec, protocol)
    inner = scen.check

    def check(world: Any) -> Any:
        v = world.machine.vmstat()
        seen.update(r for r in SPF_ABORT_REASONS if v[r])
        totals.append(v)
        return inner(world) if inner else None

    scen.check = check
    for strategy in ("random", "pct"):
        res = explore(scen, ExploreConfig(strategy=strategy, max_schedules=n, budget_seconds=None, seed=3))
        assert res.ok, res.report


@pytest.mark.parametrize("protocol,schedules", [("speculative", 300), ("dufour", 150)])
def test_concurrent_abort_reasons_and_counters_add_up(protocol: str, schedules: int) -> None:
    """Dufour's SPF counts under the same names: SPF_ABORT_ODD when the
    found VMA is being written, VMA_COPY/SEQ1/SEQ2 when it was since."""
    seen: set[str] = set()
    totals: list[dict[str, int]] = []
    for spec in ("fault-vs-munmap", "fault-vs-mprotect", "two-faults-same-page",
                 "fault-vs-mmap-fixed", "two-cow-faults"):
        _explore_collecting(spec, protocol, schedules, seen, totals)
    for v in totals:
        add_up(v)
    want = {"SPF_ABORT_ODD", "SPF_ABORT_VMA_COPY", "SPF_ABORT_PTE_MAP_LOCK_SEQ1",
            "SPF_ABORT_PTE_MAP_LOCK_PTL", "SPF_ABORT_PTE_MAP_LOCK_SEQ2"}
    assert want <= seen, f"never reached: {want - seen}"
    everything = set(SPF_ABORT_REASONS) - UNREACHABLE
    assert everything <= seen | {"SPF_ABORT_PUD", "SPF_ABORT_PMD", "SPF_ABORT_ANON_VMA",
                                 "SPF_ABORT_UNMAPPED", "SPF_ABORT_ACCESS_ERROR",
                                 "SPF_ABORT_NO_SPECULATE"}


def test_vma_lock_counters() -> None:
    seen: dict[str, int] = {}
    totals: list[dict[str, int]] = []
    _explore_collecting("fault-vs-mprotect", "pervma", 300, set(), totals)
    for v in totals:
        for k in ("vma_lock_success", "vma_lock_abort", "vma_lock_retry"):
            seen[k] = seen.get(k, 0) + v[k]
    assert seen["vma_lock_success"] > 0 and seen["vma_lock_abort"] > 0, seen
