"""The configuration: machine size and every protocol decision, as knobs.

Correct Linux behaviour is the default.  A *mutant* (check/mutants.py) is a
named set of knob values that reproduces a pitfall or a historical bug.
Model code reads a knob at the exact line where the decision is made, with
a comment saying what breaks without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

#: the values of ``Config.fault_protocol``
FAULT_PROTOCOLS = ("classic", "speculative", "pervma", "dufour")

#: Laurent Dufour's SPF (v11, 2017-2019, shipped in Android kernels) is the
#: speculative fault of ``mm/fault.py`` with three decisions changed:
DUFOUR_KNOBS: dict[str, Any] = {
    # a per-VMA sequence (vma->vm_sequence) instead of the per-mm
    # mm_lock_seq: only a writer that changed *this* VMA aborts the fault
    "spf_seq": "vma",
    # get_vma()/put_vma(): each attempt pins the VMA it found ...
    "spf_vma_refcount": True,
    # ... and the pin is honoured: the VMA is not freed while pinned
    "spf_vma_pin": True,
    # the lookup runs under read_lock(&mm->mm_rb_lock) (a cost only here)
    "spf_mm_rb_rwlock": True,
}

#: knobs a protocol implies (explicit knobs win: see Config.__post_init__).
#: A Config built for "dufour" carries them in ``knobs``; switching such a
#: Config to another protocol with ``with_`` would keep them, so build a
#: fresh Config for another protocol instead.
PROTOCOL_KNOBS: dict[str, dict[str, Any]] = {"dufour": DUFOUR_KNOBS}


@dataclass(frozen=True)
class Config:
    #: physical frames available to the page allocator (4 KiB each)
    nr_frames: int = 1 << 18
    #: simulated CPUs (threads run on them; each has a TLB)
    nr_cpus: int = 4
    #: the arch fault entry: "classic" (mmap_lock), "speculative" (the seed,
    #: Lespinasse's SPF), "pervma" (Linux 6.4 per-VMA locks), "dufour"
    #: (Laurent Dufour's SPF: "speculative" with the knobs in DUFOUR_KNOBS)
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
        if self.fault_protocol not in FAULT_PROTOCOLS:
            raise ValueError(f"fault_protocol must be classic, speculative, pervma or dufour, "
                             f"not {self.fault_protocol!r}")
        implied = PROTOCOL_KNOBS.get(self.fault_protocol)
        if implied:
            # the protocol's own knobs, under any given explicitly (a mutant
            # of the protocol overrides one of them)
            object.__setattr__(self, "knobs", {**implied, **self.knobs})
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
