"""The machine-wide kernel state every mm shares: physical memory, RCU,
the filesystem, CPUs, vmstat counters and the configuration."""

from __future__ import annotations

import itertools
from typing import Any

from specfault.config import Config
from specfault.mm.filemap import Filesystem
from specfault.mm.page import PhysMem
from specfault.mm.tlb import Cpu
from specfault.sync import Rcu

VMSTAT_EVENTS = (
    "pgfault", "pgmajfault", "pgalloc", "pgfree", "pgalloc_fail", "pgpgin", "pgpgout",
    "thp_fault_alloc", "cow_fault", "zero_page_fault", "fault_around",
    "spf_attempt", "spf_abort", "vma_lock_success", "vma_lock_abort", "vma_lock_retry",
    "vma_lock_miss", "tlb_flush", "nr_page_table_pages", "oom",
)


class Kernel:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.vmstat: dict[str, int] = dict.fromkeys(VMSTAT_EVENTS, 0)
        self.mem = PhysMem(config.nr_frames, self.vmstat)
        self.rcu = Rcu()
        self.fs = Filesystem(self)
        self.cpus = [Cpu(i) for i in range(config.nr_cpus)]
        self.pids = itertools.count(1)
        self.tids = itertools.count(1)
        self.mms: list[Any] = []   # live mms, for invariant checks

    def count(self, event: str, n: int = 1) -> None:
        self.vmstat[event] = self.vmstat.get(event, 0) + n
