"""struct mm_struct: one address space.

Fields
------
# protected by mmap_lock (write) to change; read under mmap_lock (read) or
# locklessly under RCU (mm_mt, validated by mm_lock_seq)
    mm_mt          the VMA tree (VmaTree; ``mm_mt.root`` is rcu_assign'ed)
    map_count, total_vm, start_brk, brk, mmap_base
    start_stack    bprm->p at exec: the initial stack is the VMA holding it
# set at exec (or fork), then read-only: the task's limits as the mm sees them
    rlimit_stack   RLIMIT_STACK (bytes): how far a stack may grow
    mmap_min_addr  vm.mmap_min_addr
# the locks
    mmap_lock      rw_semaphore; outermost lock of the mm
    mm_lock_seq    seqcount, odd while mmap_lock is write-held (WRITE_ONCE'd)
    page_table_lock  protects installing upper page-table levels
# protected by the PTLs of the PTEs they count (atomic counters in Linux)
    rss            {"anon", "file", "shmem"} resident pages, "swap": swap
                   PTEs (MM_SWAPENTS)
# atomic
    mm_users       threads using the mm (SPF does not speculate when 1)
    tlb_flush_pending  mmu_gathers open on the mm (inc_tlb_flush_pending in
                   tlb_gather_mmu, dec in tlb_finish_mmu after the flush):
                   while non-zero, PTEs may have changed whose TLB flush is
                   still to come (mm_tlb_flush_pending())
    tlb_flush_batched  reclaim cleared PTEs of this mm and deferred their
                   flush (set_tlb_ubc_flush_pending, rmap.TlbUbc); cleared
                   when try_to_unmap_flush has flushed them
# the CPUs that may cache translations of this mm (mm_cpumask)
    cpumask
"""

from __future__ import annotations

import itertools
from typing import Any

from specfault.constants import MMAP_BASE, MMAP_MIN_ADDR
from specfault.mm.pgtable import PageTable
from specfault.mm.vma_tree import VmaTree
from specfault.sync import RwSemaphore, SpinLock

_mm_ids = itertools.count(1)

# a fixed, non-randomised layout (setarch -R): the heap starts here
START_BRK = 0x555555559000


class MmStruct:
    def __init__(self, kernel: Any) -> None:
        self.id = next(_mm_ids)
        self.kernel = kernel
        self.config = kernel.config
        self.mm_mt = VmaTree()
        self.pgd = PageTable(4, 0)
        self.mmap_lock = RwSemaphore(f"mmap_lock#{self.id}")
        self.mm_lock_seq = 0
        self.mm_lock_seq_bits = kernel.config.mm_lock_seq_bits
        self.no_seq_bump = bool(kernel.config.knob("no_seq_bump_on_write_lock"))
        self.no_pte_none_recheck = bool(kernel.config.knob("no_pte_none_recheck"))
        self.vmstat = kernel.vmstat
        self.pages = kernel.mem.pages          # pfn -> Page, for the MMU
        self.page_table_lock = SpinLock(f"page_table_lock#{self.id}")
        self.map_count = 0
        self.total_vm = 0
        self.rss = {"anon": 0, "file": 0, "shmem": 0, "swap": 0}
        self.mm_users = 1
        self.tlb_flush_pending = 0
        self.tlb_flush_batched = False
        self.start_brk = START_BRK
        self.brk = START_BRK
        self.mmap_base = MMAP_BASE
        self.start_stack = 0
        self.rlimit_stack = 8 << 20           # _STK_LIM
        self.mmap_min_addr = MMAP_MIN_ADDR
        self.cpumask: set[Any] = set()
        self.dead = False

    def find_vma(self, addr: int) -> Any:
        """find_vma(): first VMA with vm_end > addr.  Caller holds mmap_lock."""
        return self.mm_mt.find(addr)

    def vma_lookup(self, addr: int) -> Any:
        """The VMA containing addr, or None.  Caller holds mmap_lock."""
        vma = self.mm_mt.find(addr)
        if vma is None or vma.vm_start > addr:
            return None
        return vma

    def find_vma_intersection(self, start: int, end: int) -> Any:
        vma = self.mm_mt.find(start)
        if vma is None or vma.vm_start >= end:
            return None
        return vma

    def vmas(self, lo: int = 0, hi: int | None = None) -> list[Any]:
        """The VMAs that intersect [lo, hi) in address order (to the end when
        hi is None), as a list the caller may change the tree under:
        for_each_vma_range(), O(log n + VMAs returned).  Caller holds
        mmap_lock."""
        return list(self.mm_mt.vmas(lo, hi))

    def label(self) -> str:
        return f"mm#{self.id}"

    def __repr__(self) -> str:
        return f"<mm {self.id} vmas={self.map_count}>"
