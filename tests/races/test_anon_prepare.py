"""vmf_anon_prepare() under the per-VMA lock (Linux 6.7+): a first write
fault into a VMA without an anon_vma needs mmap_lock to make one.  Under
the VMA lock the fault *tries* mmap_lock for read; only if a writer holds
or waits for it does it give up (VM_FAULT_RETRY) and redo the fault under
mmap_lock.  The races are in the scenarios two-first-faults and
first-fault-vs-mprotect; these tests pin the sequential behaviour."""

from __future__ import annotations

import specfault as sf
from specfault.check.explore import ExploreConfig, explore
from specfault.check.scenarios import build
from specfault.config import Config as MmConfig
from specfault.mm.fault import ACCESS_WRITE, do_vma_locked_fault, fault_flags
from specfault.mm.fault_flags import VM_FAULT_RETRY
from specfault.mm.mmap_lock import mmap_write_lock, mmap_write_unlock

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
PAGE = 4096


def _first_write(locked_by_writer: bool) -> dict[str, int]:
    m = sf.Machine(config=MmConfig(fault_protocol="pervma"))
    p = m.spawn("P")
    p.thread()                                # mm_users > 1
    r = p.mmap(0, 2 * PAGE, RW, ANON)
    mm = p.mm
    before = dict(m.kernel.vmstat)
    if locked_by_writer:
        # mmap_lock held for write (but this VMA not write-locked): the
        # VMA lock is taken, the trylock in vmf_anon_prepare fails
        p._run(mmap_write_lock(mm))
        ret = p._run(do_vma_locked_fault(mm, r, ACCESS_WRITE, fault_flags(ACCESS_WRITE)))
        p._run(mmap_write_unlock(mm))
        # retry: the classic path must run (the VMA lock already dropped)
        assert ret is not None and ret & VM_FAULT_RETRY
        assert mm.find_vma(r).anon_vma is None
    else:
        p.write(r, b"x")
        assert p.read(r, 1) == b"x"
    return {k: m.kernel.vmstat.get(k, 0) - before.get(k, 0) for k in
            ("vma_lock_success", "vma_lock_retry", "vma_lock_abort")}


def test_first_fault_completes_under_the_vma_lock() -> None:
    d = _first_write(locked_by_writer=False)
    assert d == {"vma_lock_success": 1, "vma_lock_retry": 0, "vma_lock_abort": 0}


def test_first_fault_retries_when_a_writer_holds_mmap_lock() -> None:
    d = _first_write(locked_by_writer=True)
    assert d["vma_lock_retry"] == 1 and d["vma_lock_success"] == 0


def test_two_first_faults_race_proven_for_pervma() -> None:
    res = explore(build("two-first-faults", "pervma"),
                  ExploreConfig(strategy="dfs", max_preemptions=1, budget_seconds=None))
    assert res.ok, res.report
    assert res.exhausted
