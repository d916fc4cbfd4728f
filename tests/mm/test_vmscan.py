"""Reclaim's decisions (mm/vmscan.py) and the invariants that watch swap
and LRU state (check/pressure_invariants.py)."""

from __future__ import annotations

import pytest

import specfault as sf
from specfault.check.invariants import InvariantViolation
from specfault.mm.page import LRU_ACTIVE_ANON, LRU_INACTIVE_ANON
from specfault.mm.vmscan import ScanControl, shrink_inactive_list
from specfault.runtime import Task, direct

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
P = 4096


def _reclaim_pass(m: sf.Machine) -> int:
    """One scan of the whole inactive anon list, references honoured."""
    k = m.kernel
    sc = ScanControl(1 << 20, kswapd=True)
    task = Task(999, "kswapd0", cpu=k.cpus[-1])
    n = direct.run(shrink_inactive_list(k, LRU_INACTIVE_ANON, len(k.mem.lru[LRU_INACTIVE_ANON]), sc),
                   task)
    if k.rcu.callbacks:
        k.rcu.process()
    return n  # type: ignore[no-any-return]


def test_a_used_page_survives_one_pass_and_is_reclaimed_when_left_alone() -> None:
    m = sf.Machine(nr_frames=64, swap_pages=17)
    p = m.spawn()
    a = p.mmap(0, 2 * P, RW, ANON)
    p.write(a, b"a")
    p.write(a + P, b"b")
    assert _reclaim_pass(m) == 0                  # young PTEs: marked PG_referenced, kept
    assert m.vmstat()["pgscan_kswapd"] == 2
    # used again (from another CPU: on x86 clearing the accessed bit does not
    # flush, so the first CPU's cached translation would not set it again)
    p.thread().write(a, b"A")
    assert _reclaim_pass(m) == 1                  # page 1: not young since -> swapped
    assert p.pagemap(a + P).swapped and p.pagemap(a).present
    assert m.kernel.mem.pages[p.pagemap(a).pfn].lru == LRU_ACTIVE_ANON   # page 0 activated
    assert m.vmstat()["pgactivate"] == 1
    assert p.read(a + P, 1) == b"b"
    m.check()


def test_without_swap_anon_lists_are_not_scanned() -> None:
    m = sf.Machine(nr_frames=32, watermark_min=4)
    p = m.spawn()
    a = p.mmap(0, 40 * P, RW, ANON)
    with pytest.raises(sf.OutOfMemory):
        for i in range(40):
            p.write(a + i * P, b"x")
    assert m.vmstat()["pgscan_anon"] == 0 and m.vmstat()["allocstall"] > 0


def test_invariants_catch_a_wrong_swap_count_and_a_leaked_slot() -> None:
    m = sf.Machine(nr_frames=64, swap_pages=17)
    p = m.spawn()
    a = p.mmap(0, 2 * P, RW, ANON)
    p.write(a, b"a")
    p.madvise(a, P, sf.MADV_PAGEOUT)
    m.check()
    si = m.kernel.swap_info[0]
    off = p.pagemap(a).swap_offset
    si.swap_map[off] += 1                         # a reference nobody holds
    with pytest.raises(InvariantViolation, match="swap count 2 but 1 swap PTEs"):
        m.check()
    si.swap_map[off] -= 1
    p.mm.rss["swap"] += 1
    with pytest.raises(InvariantViolation, match="rss\\[swap\\]"):
        m.check()
    p.mm.rss["swap"] -= 1
    m.check()


def test_invariants_catch_a_page_off_the_lru() -> None:
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    a = p.mmap(0, P, RW, ANON)
    p.write(a, b"a")
    page = m.kernel.mem.pages[p.pagemap(a).pfn]
    del m.kernel.mem.lru[page.lru][page.pfn]
    page.lru = None
    with pytest.raises(InvariantViolation, match="off the LRU"):
        m.check()
