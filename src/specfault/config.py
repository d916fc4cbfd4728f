"""The configuration: machine size and every protocol decision, as knobs.

Correct Linux behaviour is the default.  A *mutant* (check/mutants.py) is a
named set of knob values that reproduces a pitfall or a historical bug.
Model code reads a knob at the exact line where the decision is made, with
a comment saying what breaks without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Config:
    #: physical frames available to the page allocator (4 KiB each)
    nr_frames: int = 1 << 18
    #: simulated CPUs (threads run on them; each has a TLB)
    nr_cpus: int = 4
    #: the arch fault entry: "classic" (mmap_lock), "speculative" (the seed),
    #: "pervma" (Linux 6.4 per-VMA locks)
    fault_protocol: str = "classic"
    #: how page tables are freed: "rcu" (MMU_GATHER_RCU_TABLE_FREE), "ipi"
    #: (after an IPI round every CPU acknowledged), "immediate" (a mutant)
    page_table_free: str = "rcu"
    #: how VMAs are freed: "rcu" (call_rcu), "immediate" (a mutant)
    vma_free: str = "rcu"
    #: fault-around window for file read faults (fault_around_bytes)
    fault_around_bytes: int = 65536
    #: width of mm_lock_seq in bits (64 since Linux 6.x; narrow = wraparound)
    mm_lock_seq_bits: int = 64
    #: extra knobs used by later protocol work, by name
    knobs: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> Config:
        """A copy with some fields changed (unknown names go to ``knobs``)."""
        known = {f.name for f in fields(self)}
        direct = {k: v for k, v in changes.items() if k in known}
        extra = {k: v for k, v in changes.items() if k not in known}
        cfg = replace(self, **direct)
        if extra:
            cfg = replace(cfg, knobs={**cfg.knobs, **extra})
        return cfg

    def knob(self, name: str, default: Any = None) -> Any:
        return self.knobs.get(name, default)

    def __post_init__(self) -> None:
        if self.fault_protocol not in ("classic", "speculative", "pervma"):
            raise ValueError(f"fault_protocol must be classic, speculative or pervma, "
                             f"not {self.fault_protocol!r}")
        if self.page_table_free not in ("rcu", "ipi", "immediate"):
            raise ValueError(f"page_table_free must be rcu, ipi or immediate, "
                             f"not {self.page_table_free!r}")
        if self.vma_free not in ("rcu", "immediate"):
            raise ValueError(f"vma_free must be rcu or immediate, not {self.vma_free!r}")
        if self.nr_frames < 1:
            raise ValueError("nr_frames must be positive")
        if self.nr_cpus < 1:
            raise ValueError("nr_cpus must be positive")
        if self.fault_around_bytes < 4096 or self.fault_around_bytes & (self.fault_around_bytes - 1):
            raise ValueError("fault_around_bytes must be a power of two >= 4096")
