"""The machine-wide kernel state every mm shares: physical memory, RCU,
the filesystem, CPUs, vmstat counters and the configuration."""

from __future__ import annotations

import itertools
from typing import Any

from specfault.config import Config
from specfault.mm import vmscan
from specfault.mm.filemap import Filesystem
from specfault.mm.page import PhysMem
from specfault.mm.tlb import Cpu
from specfault.sync import Rcu

# the SPF patches' breakdown (CONFIG_SPECULATIVE_PAGE_FAULT_STATS)
SPF_ABORT_REASONS = (
    "SPF_ABORT_ODD", "SPF_ABORT_UNMAPPED", "SPF_ABORT_NO_SPECULATE", "SPF_ABORT_VMA_COPY",
    "SPF_ABORT_ACCESS_ERROR", "SPF_ABORT_PUD", "SPF_ABORT_PMD", "SPF_ABORT_ANON_VMA",
    "SPF_ABORT_PTE_MAP_LOCK_SEQ1", "SPF_ABORT_PTE_MAP_LOCK_PMD", "SPF_ABORT_PTE_MAP_LOCK_PTL",
    "SPF_ABORT_PTE_MAP_LOCK_SEQ2", "SPF_ABORT_USERFAULTFD", "SPF_ABORT_FAULT", "SPF_ABORT_SWAP",
)
SPF_ATTEMPT_KINDS = ("SPF_ATTEMPT_ANON", "SPF_ATTEMPT_NUMA", "SPF_ATTEMPT_PTE", "SPF_ATTEMPT_WP")
# which fault handler ran (model-only but pgreuse, Linux's PGREUSE):
# do_anonymous_page for a new page, wp_page_reuse, wp_page_shared,
# do_read_fault, do_cow_fault, do_shared_fault (zero_page_fault, cow_fault
# and fault_around above are the others); the fuzzer's coverage reads them
FAULT_HANDLER_EVENTS = ("anon_fault", "pgreuse", "wp_shared_fault", "file_read_fault",
                        "file_cow_fault", "file_shared_fault")

VMSTAT_EVENTS = (
    "pgfault", "pgmajfault", "pgalloc", "pgfree", "pgalloc_fail", "pgpgin", "pgpgout",
    "thp_fault_alloc", "cow_fault", "zero_page_fault", "fault_around",
    "spf_attempt", "spf_abort", "spf_success", "vma_lock_success", "vma_lock_abort", "vma_lock_retry",
    "vma_lock_miss", "tlb_flush", "nr_page_table_pages", "oom",
    # reclaim and swap (mm/vmscan.py, mm/swap_state.py), Linux's names
    "pswpin", "pswpout", "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd",
    "pgsteal_direct", "pgscan_anon", "pgscan_file", "pgsteal_anon", "pgsteal_file",
    "pgactivate", "pgdeactivate", "pglazyfreed", "pgrefill", "allocstall", "kswapd_wake",
    "pageoutrun", "swap_alloc_fail", "swap_slot_free", "fault_retry",
    # transparent huge pages (mm/huge_memory.py, mm/khugepaged.py)
    "thp_fault_fallback", "thp_zero_page_alloc", "thp_split_pmd", "thp_collapse_alloc",
    "thp_collapse_alloc_failed", "khugepaged_full_scans",
    # PTE tables MADV_DONTNEED reclaimed (mm/pt_reclaim.py; model-only)
    "pt_reclaim",
    # migration and compaction (mm/migrate.py), Linux's names but
    # pgmigrate_wait (faults that waited on a migration entry)
    "pgmigrate_success", "pgmigrate_fail", "pgmigrate_wait", "compact_stall", "kcompactd_wake",
) + SPF_ABORT_REASONS + SPF_ATTEMPT_KINDS + FAULT_HANDLER_EVENTS


class Kernel:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.vmstat: dict[str, int] = dict.fromkeys(VMSTAT_EVENTS, 0)
        self.mem = PhysMem(config.nr_frames, self.vmstat)
        self.mem.kernel = self
        self.mem.slowpath = vmscan.alloc_pages_slowpath
        self.mem.set_watermarks(int(config.knob("watermark_min")))
        # swap (mm/swapfile.py, mm/swap_state.py): the devices, by type, and
        # the swap cache (entry -> folio); no device unless swap_pages is set
        self.swap_info: list[Any] = []
        self.swap_cache: dict[int, Any] = {}
        if config.knob("swap_pages"):
            from specfault.mm.swapfile import swapon
            swapon(self, int(config.knob("swap_pages")))
        # kswapd (mm/vmscan.py): woken by an allocation below the low
        # watermark; run by the direct driver after each API call, by a
        # scenario's kswapd thread in the explorer
        self.kswapd_wait = False
        # khugepaged (mm/khugepaged.py): the mms registered for its scan
        # (khugepaged_enter_vma), in registration order (its mm_slot list)
        self.khugepaged_mms: list[Any] = []
        # knob rcu_irqs_off_is_reader=False: the pre-4.20 world in which an
        # interrupts-off section does not hold off an RCU grace period
        self.rcu = Rcu(irqs_off_is_reader=bool(config.knob("rcu_irqs_off_is_reader")))
        self.fs = Filesystem(self)
        self.cpus = [Cpu(i, self.rcu) for i in range(config.nr_cpus)]
        self.pids = itertools.count(1)
        self.tids = itertools.count(1)
        self.mms: list[Any] = []   # live mms, for invariant checks
        self.vma_freelist: list[Any] = []   # recycled VMAs (knob vma_typesafe_rcu)
        # VMAs out of the tree whose free waits for the last put_vma (knob
        # spf_vma_pin), by id: at quiescence a leftover one is a leaked pin
        self.vma_free_deferred: dict[int, Any] = {}
        # the checker's recorder of user accesses and TLB flushes
        # (check/properties.py History), or None: hooks in mm/access.py
        # (hw_access) and mm/tlb.py (flush_tlb_range) call it; never
        # read by the model
        self.observer: Any = None

    def count(self, event: str, n: int = 1) -> None:
        self.vmstat[event] = self.vmstat.get(event, 0) + n
