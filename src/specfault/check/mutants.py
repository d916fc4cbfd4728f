"""Mutants: named knob settings that take one design decision away.

Each reproduces a pitfall the seed warns about or a bug that shipped (or
was found in review) in Linux.  ``specfault check --list-mutants`` prints
them; ``specfault check --mutants`` runs the portfolio on each and prints
the kill table.  ``protocol`` is the fault protocol the decision belongs
to; ``scenarios`` are where the default portfolio hunts for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Mutant:
    name: str
    protocol: str
    breaks: str
    knobs: dict[str, Any] = field(default_factory=dict)
    scenarios: tuple[str, ...] = ()


MUTANTS: dict[str, Mutant] = {m.name: m for m in [
    Mutant("no_seq2_check", "speculative",
           "pte_map_lock skips the sequence check after taking the PTL: a writer "
           "that ran between SEQ1 and the trylock goes unseen",
           {"no_seq2_check": True}, ("fault-vs-munmap", "fault-vs-mprotect", "fault-vs-mmap-fixed")),
    Mutant("no_seq_check_after_lookup", "speculative",
           "the VMA copy is not validated: a copy torn by a concurrent writer "
           "(or of a VMA already unmapped) is trusted until the commit",
           {"no_seq_check_after_lookup": True, "no_seq2_check": True},
           ("fault-vs-mprotect", "fault-vs-munmap")),
    Mutant("no_seq_bump_on_write_lock", "speculative",
           "mmap_write_lock() does not bump mm_lock_seq: speculative faults "
           "never see a writer at all",
           {"no_seq_bump_on_write_lock": True}, ("fault-vs-munmap", "fault-vs-mprotect")),
    Mutant("speculate_while_odd", "speculative",
           "speculation starts while a writer holds mmap_lock (odd count) and "
           "compares against that odd value: a writer already inside is missed",
           {"speculate_while_odd": True}, ("fault-vs-mprotect", "fault-vs-munmap")),
    Mutant("vma_free_immediate", "speculative",
           "VMAs (and tree nodes) are freed at once, not after an RCU grace "
           "period: a lockless lookup reads freed memory",
           {"vma_free": "immediate"}, ("fault-vs-munmap", "fault-vs-mmap-fixed")),
    Mutant("pgtable_free_immediate", "speculative",
           "page tables are freed at once at munmap: the speculative walk reads "
           "a freed table",
           {"page_table_free": "immediate"}, ("fault-vs-munmap",)),
    Mutant("irq_off_walk_with_rcu_table_free", "speculative",
           "the speculative walk only disables interrupts while tables are "
           "freed through RCU and TLBs are flushed by the hypervisor (no IPI "
           "to wait for): nothing holds the freeing back (Andy Lutomirski)",
           {"spf_walk": "irq", "rcu_irqs_off_is_reader": False, "tlb_flush_paravirt": True},
           ("fault-vs-munmap",)),
    Mutant("no_pte_none_recheck", "speculative",
           "do_anonymous_page installs its page without re-checking under the "
           "PTL that the PTE is still none: a racing fault's page is leaked",
           {"no_pte_none_recheck": True}, ("two-faults-same-page", "two-reads-then-write")),
    Mutant("no_pte_same_recheck_wp", "speculative",
           "wp_page_copy replaces the PTE without checking it still maps the "
           "page it copied",
           {"no_pte_same_recheck_wp": True}, ("two-cow-faults",)),
    Mutant("no_page_ref_in_wp_copy", "speculative",
           "wp_page_copy copies the old page without holding a reference: an "
           "unmap frees it mid-copy",
           {"no_page_ref_in_wp_copy": True}, ("cow-vs-unmap-everywhere", "cow-vs-munmap")),
    Mutant("vma_recheck_not_mm_seq", "speculative",
           "commit re-checks only the VMA, not mm_lock_seq: the COW ABA "
           "interleaving (mprotect read-only and back) restores the VMA and "
           "the stale copy is installed (Michel Lespinasse's note)",
           {"vma_recheck_not_mm_seq": True}, ("fault-vs-mremap", "cow-aba")),
    Mutant("seq_wraparound", "speculative",
           "mm_lock_seq is 2 bits wide: two writer cycles bring it back to the "
           "value a preempted reader sampled (why it became 64-bit)",
           {"mm_lock_seq_bits": 2}, ("fault-vs-munmap-mmap",)),
    Mutant("dufour_no_vma_refcount", "dufour",
           "the speculative fault does not pin the VMA it found (no get_vma/"
           "put_vma): it re-reads the VMA's sequence after leaving the RCU "
           "section of the lookup, and an munmap may have freed the VMA by then",
           {"spf_vma_refcount": False}, ("fault-vs-munmap", "fault-vs-mmap-fixed")),
    Mutant("dufour_no_detached_check", "dufour",
           "vma_has_changed() checks only the VMA's sequence, not that it is "
           "still in the tree: a VMA found just before an mremap/munmap removed "
           "it, its sequence sampled after that writer finished, carries the "
           "writer's value, unchanged since — the fault maps a page where no "
           "VMA is",
           {"dufour_no_detached_check": True}, ("fault-vs-mremap", "fault-vs-mmap-fixed")),
    Mutant("dufour_seq_loads_reordered", "dufour",
           "the fault reads mm_lock_seq before the VMA's sequence: a writer "
           "that enters and marks the VMA between the two loads looks like a "
           "finished one, and its change goes unseen",
           {"dufour_seq_loads_reordered": True}, ("fault-vs-mremap", "fault-vs-mprotect")),
    Mutant("pervma_fork_no_vma_lock", "pervma",
           "fork does not write-lock the parent's VMAs while it write-protects "
           "their PTEs (Linux 6.4, bugzilla 217624)",
           {"pervma_fork_no_vma_lock": True}, ("fork-vs-two-faults", "fork-vs-fault-and-tlb")),
    Mutant("pervma_no_recheck_after_lock", "pervma",
           "lock_vma_under_rcu does not re-check the range after locking, with "
           "VMAs recycled type-safe-by-RCU: it locks a VMA reused for another "
           "mapping (Jann Horn)",
           {"pervma_no_recheck_after_lock": True, "vma_typesafe_rcu": True},
           ("fault-vs-remap-elsewhere",)),
    Mutant("no_isize_recheck_after_lock", "classic",
           "filemap_fault does not re-check i_size under the folio lock: a page "
           "it read in after a truncation swept the cache is mapped beyond the "
           "new end of file (every protocol takes this path for a file fault)",
           {"no_isize_recheck_after_lock": True}, ("truncate-vs-read-fault",)),
    Mutant("no_folio_mapping_recheck", "classic",
           "filemap_fault does not re-check folio->mapping under the folio lock: "
           "it maps a page a hole punch removed from the file while the fault "
           "waited for the lock — one mapping keeps a page the file no longer has",
           {"no_folio_mapping_recheck": True}, ("punch-vs-shared-fault",)),
    Mutant("truncate_drops_before_unmap", "classic",
           "truncation and hole punching remove a page from the page cache "
           "before unmapping it: until the unmap, a mapping writes to a page "
           "the file no longer has while other mappings fault in a fresh one",
           {"truncate_drops_before_unmap": True}, ("punch-vs-shared-fault", "punch-vs-pread")),
    Mutant("pervma_mprotect_no_vma_lock", "pervma",
           "mprotect changes vm_flags without vma_start_write: a fault under "
           "the VMA lock maps a page with the old permissions",
           {"pervma_mprotect_no_vma_lock": True}, ("fault-vs-mprotect",)),
]}
