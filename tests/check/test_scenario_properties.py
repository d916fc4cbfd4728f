"""The properties of check/properties.py: each fails on a broken variant
(a mutant's knob) and holds on the correct protocols.

The programs here are small directed races written for these tests (not
registered as scenarios: the portfolio must not be tuned to the mutants
nobody tuned it to).  Each is explored exhaustively, or within a small
schedule budget, so the file stays fast.
"""

from __future__ import annotations

from typing import Any

import pytest

import specfault as sf
from specfault.check.engine import Execution
from specfault.check.explore import ExploreConfig, Result, explore
from specfault.check.invariants import InvariantViolation, mm_problems
from specfault.check.properties import History, rmap_problem
from specfault.check.scenarios import PROTOCOLS
from specfault.check.scenarios.base import MmSpec, access, syscall
from specfault.check.scenarios.races import PAGE, RW, region, zero_mapped
from specfault.config import Config
from specfault.mm.madvise import sys_madvise
from specfault.mm.mprotect import sys_mprotect


def _hunt(spec: MmSpec, protocol: str, knobs: dict[str, Any] | None = None,
          schedules: int = 3000, preemptions: int = 1) -> Result:
    """DFS of ``spec`` (exhaustive up to ``preemptions``), capped."""
    cfg = Config(fault_protocol=protocol).with_(**(knobs or {}))
    return explore(spec.build(cfg), ExploreConfig(strategy="dfs", max_preemptions=preemptions,
                                                  max_schedules=schedules, budget_seconds=None,
                                                  minimize=False))


def _mprotect(prot: int):  # type: ignore[no-untyped-def]
    return lambda w, p: sys_mprotect(p.mm, w.addr["R"], 2 * PAGE, prot)


# ------------------------------------------------------------------ rmap
def test_rmap_catches_an_anonymous_page_without_anon_vma() -> None:
    """wp_copy_no_anon_vma_prepare: a read fault maps the zero page (no
    anon_vma yet), the write copies it — the copy belongs to no anon_vma:
    check_mm's rmap says so; the correct kernel prepares one."""
    for knobs, broken in (({}, False), ({"wp_copy_no_anon_vma_prepare": True}, True)):
        m = sf.Machine(nr_frames=64, **knobs)
        p = m.spawn()
        a = p.mmap(0, 2 * PAGE, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
        p.read(a, 1)
        p.write(a, b"x")
        problems = mm_problems(p.mm)
        assert any("rmap" in s and "no anon_vma" in s for s in problems) == broken, problems
        if broken:
            with pytest.raises(InvariantViolation, match="rmap"):
                m.check()
        else:
            m.check()


def test_rmap_problem_states_each_rule() -> None:
    """The four ways a PTE escapes the reverse map, each named."""
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    a = p.mmap(0, 2 * PAGE, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    p.write(a, b"x")
    kernel = m.kernel
    vma = p.mm.vma_lookup(a)
    page = next(pg for pg in kernel.mem.pages.values() if pg.anon)
    assert rmap_problem(kernel, vma, a, page) is None
    page.index += 1
    assert "index" in (rmap_problem(kernel, vma, a, page) or "")
    page.index -= 1
    page.mapping = type(vma.anon_vma)()            # a stranger's anon_vma
    assert "not reachable" in (rmap_problem(kernel, vma, a, page) or "")
    page.mapping = vma.anon_vma
    assert rmap_problem(kernel, vma, a, page) is None
    # a file page: in the page cache at that index, its VMA among the file's mappings
    m.create_file("/f", b"y" * PAGE)
    f = p.mmap(0, PAGE, sf.PROT_READ, sf.MAP_SHARED, p.open("/f"))
    p.read(f, 1)
    fvma = p.mm.vma_lookup(f)
    inode = fvma.vm_file.inode
    fpage = inode.pages[0]
    assert rmap_problem(kernel, fvma, f, fpage) is None
    assert "another file" in (rmap_problem(kernel, vma, a, fpage) or "")
    del inode.pages[0]
    assert "page cache" in (rmap_problem(kernel, fvma, f, fpage) or "")
    inode.pages[0] = fpage
    stray = fvma.dup()                              # a VMA of the file no mm holds
    assert "not among the file's mappings" in (rmap_problem(kernel, stray, f, fpage) or "")


def test_rmap_per_step_catches_the_broken_copy_and_passes_every_protocol() -> None:
    spec = MmSpec("props-zero-cow", "T0 reads then writes page1 of an untouched region; "
                  "T1 writes page0", region(touch=()),
                  [("P", [access("R1", "read"), access("R1", "write")]),
                   ("P", [access("R", "write")])])
    bad = _hunt(spec, "classic", {"wp_copy_no_anon_vma_prepare": True}, schedules=200)
    assert not bad.ok and bad.failure is not None
    assert "rmap" in bad.failure.message
    for protocol in PROTOCOLS:
        res = _hunt(spec, protocol)
        assert res.ok and res.exhausted, (protocol, res.report)


# -------------------------------------------------------- TLB coherence
def test_tlb_coherence_catches_a_missing_flush_on_write_protect() -> None:
    """mprotect_no_flush_on_wrprotect: T0 writes page0 (a writable, dirty
    entry in its TLB), T1 makes the region read-only, T0 writes again —
    through the stale entry instead of SIGSEGV."""
    spec = MmSpec("props-wp-flush", "T0 writes page0 twice while T1 makes it read-only",
                  region(), [("P", [access("R", "write"), access("R", "write", data=b"2")]),
                             ("P", [syscall("mprotect R ro", _mprotect(sf.PROT_READ))])])
    bad = _hunt(spec, "classic", {"mprotect_no_flush_on_wrprotect": True})
    assert not bad.ok and bad.failure is not None
    assert "TLB coherence" in bad.failure.message and "stale TLB entry" in bad.failure.message
    for protocol in PROTOCOLS:
        res = _hunt(spec, protocol)
        assert res.ok and res.exhausted, (protocol, res.report)


def test_tlb_coherence_catches_a_flush_that_missed_a_cpu() -> None:
    """Rule (a): an entry filled before a flush that completed is used
    after it — as when a shootdown skips a CPU."""
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    a = p.mmap(0, PAGE, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    p.write(a, b"x")
    kernel = m.kernel
    hist = kernel.observer = History(kernel, [(a, a + PAGE)])
    p.read(a, 1)                                  # a TLB hit: fine
    assert hist.tlb_hits == 1 and not hist.violations
    hist.flush_done(p.mm, a, a + PAGE)            # a flush "completed" that missed the CPU
    p.read(a, 1)
    assert hist.violations and "the flush missed it" in hist.violations[0]


# --------------------------------------------------------- no lost write
def _reader_writer_reader(ex: Execution, enabled: list[int]) -> int:
    """T0's first step, then T1 to its end, then T0 again."""
    world = ex.state
    t0_first_done = any(t == 0 for t, *_ in world.history)
    want = 1 if t0_first_done and not ex.tasks[1].done else 0
    return want if want in enabled else enabled[0]


def test_no_lost_write_catches_a_reader_of_the_old_page() -> None:
    """wp_copy_no_flush: T0 reads page1 (the zero page, cached in its TLB),
    T1's write copies it without a flush, T0 reads again through its stale
    entry: T1's completed store is lost to T0 (and the entry is stale).
    The search finds it; the correct kernel passes the same search."""
    spec = MmSpec("props-cow-flush", "T0 reads page1 twice while T1 writes it", zero_mapped(),
                  [("P", [access("R1", "read"), access("R1", "read")]),
                   ("P", [access("R1", "write")])])
    knobs = {"wp_copy_no_flush": True}
    bad = _hunt(spec, "speculative", knobs)
    assert not bad.ok and bad.failure is not None
    assert "TLB coherence" in bad.failure.message
    ex = Execution(spec.build(Config(fault_protocol="speculative").with_(**knobs)))
    ex.run(_reader_writer_reader)
    hist = ex.state.machine.kernel.observer
    assert ex.failure is not None and ex.failure.kind == "invariant", ex.failure
    assert [v.split(":")[0] for v in hist.violations] == ["TLB coherence", "lost write"]
    assert "read b'\\x00" in hist.violations[1] and "[84]" in hist.violations[1]   # T1's 'T'
    for protocol in PROTOCOLS:
        res = _hunt(spec, protocol)
        assert res.ok and res.exhausted, (protocol, res.report)
        good = Execution(spec.build(Config(fault_protocol=protocol))).run(_reader_writer_reader)
        assert good.failure is None, good.failure


def test_no_lost_write_follows_a_moved_page_and_forgets_a_discarded_one() -> None:
    """The history's rules on a sequential run: a store survives mremap at
    the new address (and a wrong value there is a lost write); DONTNEED
    discards it (anything may be read after)."""
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    p.thread()
    a = p.mmap(0, 2 * PAGE, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    kernel = m.kernel
    hist = kernel.observer = History(kernel, [(a, a + 2 * PAGE)])
    hist.observe()
    p.write(a, b"abc")
    hist.observe()
    b = p.mremap(a, 2 * PAGE, 2 * PAGE, sf.MREMAP_MAYMOVE | sf.MREMAP_FIXED, a - 16 * PAGE)
    hist.observe()
    assert p.read(b, 3) == b"abc" and not hist.violations
    assert hist.final_sweep() is None
    page = next(pg for pg in kernel.mem.pages.values() if pg.anon)
    page.write(0, b"z")                          # the store "lost" behind the model's back
    assert "lost write" in (hist.final_sweep() or "")
    page.write(0, b"a")
    p.madvise(b, PAGE, sf.MADV_DONTNEED)
    hist.observe()
    assert p.read(b, 3) == bytes(3) and not hist.violations
    assert hist.final_sweep() is None


def test_madv_free_no_flush_lets_a_store_escape_the_dirty_bit() -> None:
    """madv_free_no_flush: after MADV_FREE cleans the PTE, T0's cached
    dirty entry takes a store without dirtying the PTE (TLB coherence);
    the correct kernel flushes, and the store re-dirties the PTE."""
    async def free(w: Any, p: Any) -> int:
        return await sys_madvise(p.mm, w.addr["R"], 2 * PAGE, sf.MADV_FREE)

    spec = MmSpec("props-free-flush", "T0 writes page0 twice while T1 MADV_FREEs it",
                  region(), [("P", [access("R", "write"), access("R", "write", data=b"2")]),
                             ("P", [syscall("madvise FREE R", free)])])
    bad = _hunt(spec, "classic", {"madv_free_no_flush": True})
    assert not bad.ok and bad.failure is not None
    assert "cleaned" in bad.failure.message
    for protocol in PROTOCOLS:
        res = _hunt(spec, protocol)
        assert res.ok and res.exhausted, (protocol, res.report)
