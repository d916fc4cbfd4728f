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
    #: "scenarios": the default portfolio kills it (the kill table, whose
    #: budget test holds it to half the default); "fuzz": written without
    #: tuning any scenario to it, and the scenario portfolio does not kill
    #: it — the input ``specfault fuzz`` must find (docs/protocols.md,
    #: "Mutants nobody tuned the scenarios to")
    expect: str = "scenarios"
    #: what catches it: the check that failed in the portfolio's kill, or
    #: for the fuzzer's mutants the property a directed test shows failing
    caught_by: str = ""


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
    # ------------------------------------------- reclaim and swap (issue 12)
    Mutant("no_pte_same_after_swapin", "classic",
           "do_swap_page maps the folio it read without re-checking under the "
           "PTL that the PTE still holds the swap entry: a racing munmap, "
           "MAP_FIXED or second swap-in changed it while the read slept",
           {"no_pte_same_after_swapin": True},
           ("two-swapins", "swapin-vs-munmap", "swapin-vs-mmap-fixed")),
    Mutant("reclaim_free_before_flush", "classic",
           "shrink_folio_list writes the folio out and frees it before the "
           "deferred TLB flush of the PTEs try_to_unmap cleared: a CPU still "
           "holding the translation stores into a page already written or freed",
           {"reclaim_free_before_flush": True}, ("write-vs-reclaim",)),
    Mutant("try_to_unmap_no_ptl", "classic",
           "the reverse-map walkers read and replace PTEs without the PTL: a "
           "zap or a COW fault that changes the PTE meanwhile is overwritten "
           "(reclaim holds no mmap_lock, so nothing else orders them)",
           {"try_to_unmap_no_ptl": True}, ("reclaim-vs-munmap", "cow-vs-reclaim")),
    # ----------------- writers of page tables under mmap_lock read or none
    Mutant("spf_no_pmd_same", "speculative",
           "the speculative commit does not check that the PMD still holds the "
           "PTE table it walked to: MADV_DONTNEED reclaims the emptied table "
           "under mmap_lock for read (no sequence moves) and the fault maps its "
           "page into the detached table (before table reclaim, only writers "
           "under mmap_lock for write changed a PMD, and SEQ2 caught them: the "
           "check was dead code)",
           {"spf_no_pmd_same": True}, ("fault-vs-table-reclaim",),
           caught_by="check_mm (a page mapped by no PTE) or UseAfterFree"),
    Mutant("spf_pmd_same_before_ptl", "speculative",
           "the speculative commit checks pmd_same before the PTL trylock, not "
           "under the PTL (Lespinasse's order, sound while only mmap_lock "
           "writers changed PMDs): a table reclaim between the check and the "
           "trylock goes unseen",
           {"spf_pmd_same_before_ptl": True}, ("fault-vs-table-reclaim",),
           caught_by="check_mm (a page mapped by no PTE) or UseAfterFree"),
    Mutant("pt_reclaim_free_immediate", "classic",
           "a PTE table MADV_DONTNEED reclaims is freed at once, not after an "
           "RCU grace period (tlb_remove_ptdesc): a fault's walk (any "
           "protocol: DONTNEED holds mmap_lock for read only) reads the freed "
           "table",
           {"pt_reclaim_free_immediate": True}, ("fault-vs-table-reclaim",),
           caught_by="UseAfterFree"),
    Mutant("migration_entry_no_wait", "classic",
           "a fault on a migration entry does not wait for the migration "
           "(migration_entry_wait): it maps the page the entry names, under the "
           "PTL after re-checking the PTE — the migration still succeeds, and the "
           "source it isolated from the LRU stays mapped, off every LRU (no "
           "reclaim will ever find it), while the copy is dropped",
           {"migration_entry_no_wait": True}, ("fault-vs-migration", "cow-vs-migration"),
           caught_by="check_mm (a mapped page off the LRU)"),
    Mutant("migration_map_no_pte_same", "classic",
           "a fault on a migration entry maps the page the entry names itself "
           "(no waiting for the migration), under the PTL but without checking "
           "the PTE still holds the entry: a migration that finished meanwhile "
           "mapped the copy there and freed the page now mapped",
           {"migration_map_no_pte_same": True}, ("fault-vs-migration", "cow-vs-migration"),
           caught_by="ModelBug (get_page on a freed page) or check_mm"),
    Mutant("migration_copy_before_flush", "classic",
           "migration copies the folio before flushing the TLB entries of the "
           "PTEs it turned into migration entries (the flush batched to the "
           "end, as reclaim may): a CPU still holding the old translation "
           "stores into the source after the copy, and the copy is mapped",
           {"migration_copy_before_flush": True}, ("fault-vs-migration",),
           caught_by="no lost write (the migration entry carries the values)"),
    Mutant("mremap_no_src_ptl", "classic",
           "mremap's move_ptes takes only the destination table's PTL (\"mmap_lock "
           "for write excludes every fault\"): reclaim's try_to_unmap, which holds "
           "no mmap_lock, changes a source PTE between move_ptes' read and clear — "
           "its swap entry is lost or the page moved and unmapped at once.  Only a "
           "writer without mmap_lock can tell: faults, zaps and table reclaim all "
           "take mmap_lock",
           {"mremap_no_src_ptl": True}, ("mremap-vs-reclaim",),
           caught_by="check_mm (mapcount, swap count)"),
    # ------------------------------------- huge PMDs (mm/khugepaged.py)
    Mutant("dufour_collapse_no_pmd_same", "dufour",
           "the speculative commit does not check that the PMD still holds the "
           "PTE table it walked to, in the world of Dufour's kernels, where "
           "khugepaged's collapse takes mmap_lock for write alone and leaves the "
           "VMA's sequence untouched: the fault commits into the table the "
           "collapse took out — its page mapped by a table no walk reaches",
           {"spf_no_pmd_same": True, "collapse_vma_start_write": False},
           ("fault-vs-khugepaged",),
           caught_by="check_mm (a page's mapcount against the PTEs that map it)"),
]}

#: Mutants written after the scenarios, as plausible kernel-developer bugs
#: in every protocol and every writer, with no scenario added for them.
#: ``scenarios`` names the existing scenarios that run the code path each
#: one breaks (its writer or handler), chosen before any hunt, as for the
#: mutants above; the portfolio hunts there first, then through every
#: other scenario of its protocol.  ``expect`` says what that hunt found
#: (``specfault check --mutants --mutant M``, 24,000 schedules).
NEW_MUTANTS: dict[str, Mutant] = {m.name: m for m in [
    Mutant("wp_no_pte_same_recheck", "classic",
           "handle_pte_fault hands a write to a write-protected PTE to do_wp_page "
           "without the pte_same re-check under the PTL (the other handlers keep "
           "theirs): do_wp_page reuses a page a racing COW already replaced",
           {"wp_no_pte_same_recheck": True}, ("two-cow-faults", "cow-aba", "cow-vs-munmap"),
           caught_by="check_mm (a leaked page)"),
    Mutant("wp_copy_no_flush", "speculative",
           "wp_page_copy clears the old read-only PTE and sets the copy without "
           "flushing (\"nobody can write through a read-only entry\"): other CPUs "
           "keep reading the old page and miss the stores to the copy",
           {"wp_copy_no_flush": True}, ("two-reads-then-write", "two-cow-faults", "cow-aba"),
           caught_by="TLB coherence; no lost write (tests/check/test_scenario_properties.py)"),
    Mutant("wp_copy_no_anon_vma_prepare", "classic",
           "wp_page_copy skips anon_vma_prepare (\"a page is mapped, so the VMA has "
           "an anon_vma\"): copying the zero page a read fault mapped installs an "
           "anonymous page the rmap cannot reach",
           {"wp_copy_no_anon_vma_prepare": True}, ("two-reads-then-write", "read-then-write-vs-mprotect"),
           expect="fuzz", caught_by="rmap (tests/check/test_scenario_properties.py)"),
    Mutant("pervma_mremap_no_vma_lock", "pervma",
           "mremap's move_vma does not vma_start_write the source VMA: a fault "
           "under its VMA lock installs a PTE behind move_page_tables",
           {"pervma_mremap_no_vma_lock": True}, ("fault-vs-mremap",),
           caught_by="linearizability"),
    Mutant("pervma_unlock_before_ptl", "pervma",
           "the per-VMA fault drops the VMA lock once the VMA is found and checked, "
           "before the handler takes the PTL (\"the PTL protects the PTE\")",
           {"pervma_unlock_before_ptl": True}, ("fault-vs-munmap", "fault-vs-mprotect"),
           caught_by="check_mm (a leaked page)"),
    Mutant("fork_no_wrprotect_parent", "classic",
           "copy_present_pte write-protects the child's copy of a writable PTE but "
           "forgets ptep_set_wrprotect on the parent's",
           {"fork_no_wrprotect_parent": True}, ("cow-vs-fork", "fork-vs-fault-and-tlb"),
           caught_by="PTE invariant (COW broken)"),
    Mutant("fork_flush_before_wrprotect", "pervma",
           "dup_mmap flushes the parent's TLBs before copy_page_range "
           "write-protects its PTEs: a CPU that refills a writable entry in "
           "between writes the page the child now shares",
           {"fork_flush_before_wrprotect": True}, ("fork-vs-fault-and-tlb", "cow-vs-fork"),
           caught_by="TLB coherence"),
    Mutant("mprotect_no_flush_on_wrprotect", "classic",
           "change_protection skips the TLB flush when PTEs only lose write "
           "permission: a CPU keeps writing through its cached entry after "
           "mprotect(PROT_READ) returned",
           {"mprotect_no_flush_on_wrprotect": True},
           ("fault-vs-mprotect", "read-then-write-vs-mprotect", "cow-aba"),
           caught_by="linearizability; TLB coherence (tests/check/test_scenario_properties.py)"),
    Mutant("madv_free_no_flush", "classic",
           "MADV_FREE cleans the PTEs without flushing the TLBs: a store through a "
           "cached dirty entry does not dirty the PTE, and reclaim discards it",
           {"madv_free_no_flush": True}, ("fault-vs-dontneed",),
           expect="fuzz", caught_by="TLB coherence (tests/check/test_scenario_properties.py)"),
    Mutant("tlb_free_pages_before_flush", "classic",
           "tlb_finish_mmu frees the gathered pages before flushing the TLBs: a "
           "CPU still holding an entry reads or writes a freed frame",
           {"tlb_free_pages_before_flush": True}, ("fault-vs-dontneed", "fault-vs-munmap", "cow-vs-munmap"),
           caught_by="ModelBug (an access through a PTE to a free frame)"),
    Mutant("vma_merge_free_immediate", "speculative",
           "a VMA absorbed by an mprotect/madvise merge is freed at once (it is "
           "out of the tree already), not after an RCU grace period",
           {"vma_merge_free_immediate": True}, ("cow-aba", "fault-vs-mprotect"),
           expect="fuzz", caught_by="UseAfterFree (tests/races/test_new_mutants.py)"),
    Mutant("spf_walk_end_early", "speculative",
           "the speculative walk leaves its RCU section once it has the PTE "
           "table, before it reads the entry (\"only the table pointer needs "
           "protecting\"): munmap frees the table in between",
           {"spf_walk_end_early": True}, ("fault-vs-munmap",),
           caught_by="UseAfterFree"),
    Mutant("dufour_seq_after_copy", "dufour",
           "the speculative fault copies the VMA before sampling its sequence: a "
           "writer that changes the VMA after the copy and finishes before the "
           "sample leaves a stale copy with a fresh sequence",
           {"dufour_seq_after_copy": True}, ("fault-vs-mprotect", "fault-vs-mremap"),
           caught_by="PTE invariant (writable PTE in a read-only VMA)"),
]}
MUTANTS.update(NEW_MUTANTS)
