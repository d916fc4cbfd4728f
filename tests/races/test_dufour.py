"""Dufour's SPF (protocol "dufour") against Lespinasse's ("speculative"):
the design difference, the pin, and the protocol's knobs.

Lespinasse validates a speculative fault against the per-mm
``mm_lock_seq``: any writer anywhere in the mm aborts it (the "false
aborts" of the per-mm count).  Dufour validates against the faulting VMA's
own sequence: only a writer that changed that VMA does.
"""

from __future__ import annotations

from typing import Any

import pytest

import specfault as sf
from specfault.check.explore import ExploreConfig, explore
from specfault.check.invariants import InvariantViolation
from specfault.check.scenarios import build
from specfault.check.scenarios.base import MmSpec, access, make_world, syscall
from specfault.config import DUFOUR_KNOBS
from specfault.config import Config as MmConfig
from specfault.mm.kernel import SPF_ABORT_REASONS
from specfault.mm.mprotect import sys_mprotect
from specfault.mm.spf import PutVma, get_vma, put_vma

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
PAGE = 4096
#: the aborts that mean "a writer ran" (the sequence checks)
SEQ_ABORTS = ("SPF_ABORT_ODD", "SPF_ABORT_VMA_COPY", "SPF_ABORT_PTE_MAP_LOCK_SEQ1",
              "SPF_ABORT_PTE_MAP_LOCK_SEQ2")


def _two_vmas(m: sf.Machine) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, int]]]:
    """A (two pages, page0 written) and B (one page, written), 4 MiB apart:
    different VMAs, different PTE tables (so no PTL is shared either)."""
    p = m.spawn("P")
    p.thread()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    b = p.mmap(a - (4 << 20), PAGE, RW, ANON | sf.MAP_FIXED)
    p.write(a, b"init")
    p.write(b, b"init")
    return {"P": p}, {"A": a, "A1": a + PAGE, "B": b}, [(a, a + 2 * PAGE), (b, b + PAGE)]


UNRELATED = MmSpec(
    "fault-vs-unrelated-mprotect",
    "T0 write-faults page1 of A while T1 makes B, another VMA, read-only.",
    _two_vmas, [("P", [access("A1", "write")]),
                ("P", [syscall("mprotect B ro", lambda w, p: sys_mprotect(
                    p.mm, w.addr["B"], PAGE, sf.PROT_READ))])])


def _abort_counts(protocol: str) -> list[dict[str, int]]:
    """Every schedule of the race up to one preemption: the SPF counters
    of each execution (and each execution passes its checks)."""
    config = MmConfig(fault_protocol=protocol)
    scen = UNRELATED.build(config)
    # the setup's own faults count too (it runs the same protocol): subtract
    base = make_world(UNRELATED, config.with_(nr_frames=UNRELATED.frames)).machine.vmstat()
    inner = scen.check
    seen: list[dict[str, int]] = []

    def check(world: Any) -> Any:
        v = world.machine.vmstat()
        seen.append({k: v[k] - base.get(k, 0) for k in v})
        return inner(world) if inner else None

    scen.check = check
    res = explore(scen, ExploreConfig(strategy="dfs", max_preemptions=1, budget_seconds=None))
    assert res.ok, res.report
    assert res.exhausted
    return seen


def test_unrelated_writer_aborts_speculative_but_not_dufour() -> None:
    spec = _abort_counts("speculative")
    assert any(v[r] for v in spec for r in SEQ_ABORTS), \
        "the mprotect of B never aborted Lespinasse's fault on A"
    duf = _abort_counts("dufour")
    assert duf and all(v["spf_attempt"] >= 1 for v in duf)
    bad = [v for v in duf if v["spf_abort"]]
    assert not bad, {r: bad[0][r] for r in SPF_ABORT_REASONS if bad[0][r]}
    assert all(v["spf_success"] == v["spf_attempt"] for v in duf)


def test_dufour_is_speculative_with_its_knobs() -> None:
    cfg = MmConfig(fault_protocol="dufour")
    for k, v in DUFOUR_KNOBS.items():
        assert cfg.knob(k) == v
    assert cfg.with_(spf_vma_refcount=False).knob("spf_vma_refcount") is False   # a mutant wins
    assert MmConfig(fault_protocol="speculative").knob("spf_seq") == "mm"
    try:
        MmConfig(fault_protocol="lespinasse")
    except ValueError as exc:
        assert "dufour" in str(exc)
    else:
        raise AssertionError("bad protocol accepted")


def test_sequential_dufour_fault_pins_and_unpins() -> None:
    m = sf.Machine(fault_protocol="dufour")
    p = m.spawn()
    p.thread()                                     # mm_users 2: speculation allowed
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.write(a, b"x")                               # aborts (no tables), classic
    before = m.vmstat()
    p.write(a + PAGE, b"y")                        # speculative, succeeds
    v = m.vmstat()
    assert v["spf_success"] - before["spf_success"] == 1, v
    assert v["spf_abort"] == before["spf_abort"], v
    vma = p.mm.find_vma(a)
    assert vma.vm_ref_count == 0 and vma.vm_free_pending is None
    m.check()


async def _pin(vma: Any) -> int:
    return int(await get_vma(vma))


async def _unpin(vma: Any) -> int:
    return int(await put_vma(vma))


@pytest.mark.parametrize("typesafe", [False, True])
def test_free_of_a_pinned_vma_waits_for_the_last_put(typesafe: bool) -> None:
    """The free side of get_vma/put_vma, sequentially: munmap a VMA a
    fault has pinned; its grace period ends (the direct driver runs the
    callbacks) but it is only marked free-pending — check_mm reports the
    pin while it is held — and the put_vma frees it: poisoned, or onto the
    freelist when VMAs are type-safe (recycled)."""
    m = sf.Machine(fault_protocol="dufour", vma_typesafe_rcu=typesafe)
    p = m.spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    vma = p.mm.find_vma(a)
    assert p._run(_pin(vma)) == 1
    p.munmap(a, 2 * PAGE)
    assert vma.freed_at is None and vma.vm_free_pending is not None
    assert vma not in m.kernel.vma_freelist
    with pytest.raises(InvariantViolation, match="pin was not dropped"):
        m.check()
    assert p._run(_unpin(vma)) == 0
    assert vma.vm_free_pending is None
    if typesafe:
        assert vma.freed_at is None and vma in m.kernel.vma_freelist
    else:
        assert vma.freed_at is not None
    m.check()


def test_explorer_reaches_the_deferred_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the explorer, fault-vs-munmap reaches the schedules where the
    VMA's RCU callback runs while the fault holds its pin, and put_vma
    frees it — and they pass."""
    frees: list[str] = []
    perform = PutVma.perform

    def spy(self: PutVma) -> int:
        if self.vma.vm_ref_count == 1 and self.vma.vm_free_pending is not None:
            frees.append(self.vma.label())
        return perform(self)

    monkeypatch.setattr(PutVma, "perform", spy)
    res = explore(build("fault-vs-munmap", "dufour"),
                  ExploreConfig(strategy="random", max_schedules=300, budget_seconds=None, seed=32))
    assert res.ok, res.report
    assert frees, "no schedule freed the VMA at put_vma"
