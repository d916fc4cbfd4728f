"""The mutants nobody tuned the scenarios to (check/mutants.py
NEW_MUTANTS): each is registered with a knob of kind "mutant", and each
knob reaches its branch — a directed program (sequential, or a small race
explored by DFS, not registered as a scenario) fails with the knob and
passes without it.  Whether the scenario portfolio kills each one is
``expect`` (docs/protocols.md, "Mutants nobody tuned the scenarios to")."""

from __future__ import annotations

from typing import Any

import pytest

import specfault as sf
from specfault.check.explore import ExploreConfig, explore
from specfault.check.invariants import InvariantViolation
from specfault.check.mutants import MUTANTS, NEW_MUTANTS
from specfault.check.scenarios.base import MmSpec, access, syscall
from specfault.check.scenarios.races import (
    PAGE,
    RW,
    SPEC_BY_NAME,
    _exit_mm,
    forked,
    region,
)
from specfault.config import KNOBS, Config
from specfault.mm.fork import dup_mmap
from specfault.mm.madvise import sys_madvise
from specfault.mm.mprotect import sys_mprotect


def test_each_new_mutant_is_registered_with_its_knobs() -> None:
    assert len(NEW_MUTANTS) >= 10
    protocols = {m.protocol for m in NEW_MUTANTS.values()}
    assert protocols == {"classic", "speculative", "pervma", "dufour"}
    for name, m in NEW_MUTANTS.items():
        assert MUTANTS[name] is m
        assert m.expect in ("scenarios", "fuzz"), m
        for knob in m.knobs:
            assert KNOBS[knob].kind == "mutant", knob
        assert all(s in SPEC_BY_NAME for s in m.scenarios), m


def _pct(spec: MmSpec, protocol: str, knobs: dict[str, Any], schedules: int) -> Any:
    """PCT (depth 3, seed 0) on ``spec``: at most ``schedules``."""
    cfg = Config(fault_protocol=protocol).with_(**knobs)
    return explore(spec.build(cfg), ExploreConfig(strategy="pct", pct_depth=3, seed=0,
                                                  max_schedules=schedules, budget_seconds=None,
                                                  minimize=False))


def _mprotect(key: str, pages: int, prot: int):  # type: ignore[no-untyped-def]
    return lambda w, p: sys_mprotect(p.mm, w.addr[key], pages * PAGE, prot)


async def _fork_keep(w: Any, p: Any) -> int:
    """fork; the child stays (its pages COW-shared with the parent)."""
    await dup_mmap(p.mm)
    return 0


async def _dontneed(w: Any, p: Any) -> int:
    return await sys_madvise(p.mm, w.addr["R"], 2 * PAGE, sf.MADV_DONTNEED)


async def _fork_then_exit(w: Any, p: Any) -> int:
    child = await dup_mmap(p.mm)
    await _exit_mm(type("C", (), {"mm": child})())
    return 0


#: mutant -> (program, protocol, what the failure says)
RACES: dict[str, tuple[MmSpec, str, str]] = {
    "wp_no_pte_same_recheck": (
        MmSpec("nm-two-cow", "T0 and T1 write page0, COW-shared with a child", forked(),
               [("P", [access("R", "write")]), ("P", [access("R", "write")])]),
        "classic", ""),
    "wp_copy_no_flush": (
        MmSpec("nm-cow-reader", "T0 reads page0 (COW-shared) twice while T1 writes it", forked(),
               [("P", [access("R", "read"), access("R", "read")]), ("P", [access("R", "write")])]),
        "speculative", "TLB coherence"),
    "pervma_mremap_no_vma_lock": (SPEC_BY_NAME["fault-vs-mremap"], "pervma", ""),
    "pervma_unlock_before_ptl": (SPEC_BY_NAME["fault-vs-munmap"], "pervma", ""),
    "fork_flush_before_wrprotect": (
        MmSpec("nm-fork-tlb", "T0 reads then writes page0 while T1 forks", region(),
               [("P", [access("R", "read"), access("R", "write", data=b"W")]),
                ("P", [syscall("fork", _fork_keep)])]),
        "pervma", "TLB coherence"),
    "mprotect_no_flush_on_wrprotect": (
        MmSpec("nm-wp-flush", "T0 writes page0 twice while T1 makes it read-only", region(),
               [("P", [access("R", "write"), access("R", "write", data=b"2")]),
                ("P", [syscall("mprotect R ro", _mprotect("R", 2, sf.PROT_READ))])]),
        "classic", "TLB coherence"),
    "tlb_free_pages_before_flush": (
        MmSpec("nm-free-early", "T0 reads page0 twice while T1 zaps it", region(),
               [("P", [access("R", "read"), access("R", "read")]),
                ("P", [syscall("madvise DONTNEED R", _dontneed)])]),
        "classic", ""),
    "vma_merge_free_immediate": (
        MmSpec("nm-merge", "T0 writes page1 while T1 splits it off and merges it back",
               region(), [("P", [access("R1", "write")]),
                          ("P", [syscall("mprotect R1 ro", _mprotect("R1", 1, sf.PROT_READ)),
                                 syscall("mprotect R1 rw", _mprotect("R1", 1, RW))])]),
        "speculative", "UseAfterFree"),
    "spf_walk_end_early": (SPEC_BY_NAME["fault-vs-munmap"], "speculative", "UseAfterFree"),
    "dufour_seq_after_copy": (SPEC_BY_NAME["fault-vs-mprotect"], "dufour", ""),
}


@pytest.mark.parametrize("mutant", sorted(RACES))
def test_the_knob_breaks_a_directed_race(mutant: str) -> None:
    spec, protocol, says = RACES[mutant]
    bad = _pct(spec, protocol, NEW_MUTANTS[mutant].knobs, 1000)
    assert not bad.ok, f"{mutant}: no failure in {bad.schedules} schedules"
    assert says in bad.failure.headline(), bad.failure.headline()
    good = _pct(spec, protocol, {}, max(bad.schedules, 100))
    assert good.ok, good.report


def test_fork_no_wrprotect_parent_leaves_the_parent_writable() -> None:
    for broken in (False, True):
        m = sf.Machine(nr_frames=64, fork_no_wrprotect_parent=broken)
        p = m.spawn()
        a = p.mmap(0, PAGE, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
        p.write(a, b"x")
        p.fork()
        if broken:
            with pytest.raises(InvariantViolation, match="COW broken"):
                m.check()
        else:
            m.check()


def test_wp_copy_no_anon_vma_prepare_is_reached_sequentially() -> None:
    for broken in (False, True):
        m = sf.Machine(nr_frames=64, wp_copy_no_anon_vma_prepare=broken)
        p = m.spawn()
        a = p.mmap(0, PAGE, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
        p.read(a, 1)
        p.write(a, b"x")
        c = p.fork()          # fork copies no PTE of a VMA without anon_vma
        assert c.read(a, 1) == (b"\0" if broken else b"x")


def test_madv_free_no_flush_loses_a_store_to_reclaim() -> None:
    """A store after MADV_FREE, through the cached dirty entry, does not
    dirty the PTE: MADV_PAGEOUT then discards it (the correct kernel keeps it)."""
    for broken in (False, True):
        m = sf.Machine(nr_frames=64, madv_free_no_flush=broken)
        p = m.spawn()
        a = p.mmap(0, PAGE, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
        p.write(a, b"x")
        p.madvise(a, PAGE, sf.MADV_FREE)
        p.write(a, b"y")
        p.madvise(a, PAGE, sf.MADV_PAGEOUT)
        assert p.read(a, 1) == (b"\0" if broken else b"y")


def test_every_new_mutant_has_a_directed_test() -> None:
    sequential = {"fork_no_wrprotect_parent", "wp_copy_no_anon_vma_prepare", "madv_free_no_flush"}
    assert set(RACES) | sequential == set(NEW_MUTANTS)
