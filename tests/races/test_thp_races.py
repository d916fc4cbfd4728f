"""The huge-PMD writers against the faults (check/scenarios/thp.py):
every protocol passes both THP scenarios; the two THP mutants are killed
(their saved schedules: tests/races/test_race_mutants.py); and the knob
collapse_vma_start_write shows which check sees khugepaged's collapse in
which protocol — the VMA write lock (per-VMA faults; Dufour's sequence,
which is built on it), mm_lock_seq (Lespinasse's SPF), or, in the world of
Dufour's kernels (collapse without the VMA lock), the commit's pmd_same
under the PTL."""

from __future__ import annotations

from typing import Any

import pytest

from specfault.check.explore import ExploreConfig, explore
from specfault.check.scenarios import PROTOCOLS, SPEC_BY_NAME
from specfault.config import Config


def _explore(spec: str, protocol: str, knobs: dict[str, Any], strategy: str,
             schedules: int) -> Any:
    cfg = Config(fault_protocol=protocol).with_(**knobs)
    return explore(SPEC_BY_NAME[spec].build(cfg),
                   ExploreConfig(strategy=strategy, max_schedules=schedules, budget_seconds=None,
                                 seed=0, minimize=False))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("spec", ["fault-vs-khugepaged", "huge-zero-wp-vs-split"])
def test_every_protocol_passes(spec: str, protocol: str) -> None:
    res = _explore(spec, protocol, {}, "random", 150)
    assert res.ok, res.report


def test_dufours_world_needs_pmd_same_under_the_ptl() -> None:
    """Collapse without the VMA write lock (Dufour's kernels): the commit's
    pmd_same under the PTL is exhaustively correct — the collapse clears
    the PMD under the PMD lock, then needs the old table's PTL to isolate
    its pages; checked before the trylock (Lespinasse's order), the whole
    collapse can run between the check and the trylock."""
    world = {"collapse_vma_start_write": False}
    assert _explore("fault-vs-khugepaged", "dufour", world, "dfs", 5000).ok
    res = _explore("fault-vs-khugepaged", "dufour", {**world, "spf_pmd_same_before_ptl": True},
                   "random", 2000)
    assert not res.ok
    assert "0 PTEs map it" in str(res.failure)


def test_lespinasse_spf_sees_the_collapse_without_pmd_same() -> None:
    """mm_lock_seq: the collapse takes mmap_lock for write, so the seed's
    commit (SEQ1/SEQ2) already sees it — pmd_same is not what protects the
    seed against khugepaged."""
    knobs = {"spf_no_pmd_same": True, "collapse_vma_start_write": False}
    assert _explore("fault-vs-khugepaged", "speculative", knobs, "random", 1000).ok
