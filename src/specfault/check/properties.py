"""Three properties the structural invariants (``check/invariants.py``) do
not state, checked on every execution of every mm scenario (and of every
program built on ``check/scenarios/base.py``'s checking functions).

1. **Reverse-mapping consistency** (:func:`rmap_problem`): every mapped
   anonymous page belongs to an anon_vma reachable from the VMA that maps
   it (one of its ``anon_vma_chain``), and its index is the VMA's linear
   index of the address (so ``rmap_walk`` computes the address back);
   every mapped file page is the page cache's page at that index of the
   VMA's file, and the VMA is among the file's mappings
   (:func:`file_mappings`).

   *When it holds.*  The relation between a PTE and its page is made and
   unmade under the PTL of the PTE's table: ``folio_add_new_anon_rmap`` +
   ``set_pte_at`` (do_anonymous_page, wp_page_copy, finish_fault), the
   zaps (zap_pte_range, zap_file_ptes, reclaim), fork's copy (both PTLs)
   and mremap's move (both PTLs; the destination VMA, with the pgoff that
   keeps the linear index, exists before the move).  The VMA side changes
   under ``mmap_lock`` held for write, after ``vma_start_write``
   (split, merge, mremap, munmap, mprotect) — mid-split a PTE may lie
   outside the shrunk VMA or in a half with the wrong pgoff — except
   ``anon_vma_prepare``, which sets ``anon_vma`` and the chain together
   under ``page_table_lock`` in one step of the model.  Page-cache
   membership changes under the page-cache lock, and a page leaves the
   cache only unmapped (truncation unmaps first; reclaim takes only
   unmapped pages).  So the property holds **at every step** for every
   PTE whose table's PTL is free, in every mm whose ``mmap_lock`` no
   writer holds (``mm_lock_seq`` even) — the per-step check
   (:meth:`History.rmap_step`, over the scenario's region) — and for every
   PTE at quiescent points and at the end (``check_mm``, which calls
   :func:`rmap_problem` for each PTE).

2. **No lost write** (:class:`History`, ``user_access`` and
   :meth:`History.observe`): a user store that completed is visible to
   every later load of that address in that mm until it is overwritten,
   or its translation is discarded.

   *Real-time order.*  A user load or store is one atomic step of the
   execution (``UserAccess``: the instruction retires there; an access
   that faults does not complete and is retried), so the steps give every
   pair of completed accesses an order; a *later* load is one whose step
   comes after the store's.  Two completed stores are therefore never
   unordered: the admissible values of a byte are a set only to be
   general (``adm``); here each is the value of the one latest store.

   *Overwritten* — by a store to the same byte of the same physical page
   through any mapping (an alias in this mm, a shared page in another).
   *Discarded* — the translation of the address's page was observed gone
   (the PTE none or a swap entry: munmap, MADV_DONTNEED, exit, truncation,
   reclaim of a MADV_FREE page, a mapping replaced by MAP_FIXED): later
   loads are unconstrained until the next store.  *Moved* — an anonymous
   page that leaves one address and appears at another (mremap, which
   moves the PTE or the whole PTE table) carries its admissible values
   with it ("follow the page").  A PTE that switches directly from one
   page to another (a COW copy, the zero page replaced) keeps them: the
   new page must hold what the old one held.  Translations are observed
   after every step for the pages of the scenario's region and every
   address ever stored to, each only while its PTE table's PTL is free
   (so ``ptep_clear_flush`` + ``set_pte_at`` of a COW is one switch, not
   a discard).

   *In transit* — a migration entry (mm/migrate.py) is not a mapping (no
   load or store can use it: the access faults and waits), but it is not
   a discard either: the address's values travel with the page the entry
   names — the source, locked by the migrator — and when the entry
   becomes a PTE of the copy, that is a direct switch: the copy must hold
   what the source held (a store lost between the unmap and the copy is
   caught there).  An entry zapped meanwhile is a discard.

   A load at an address with no recorded store since its last discard is
   unconstrained (the setup's stores are not recorded), and so is a load
   from a page-cache page (file or shmem), whose contents also change
   through the file (write(2), truncation, hole punching) with no user
   store to record.  Reclaim of a MADV_FREE page is a discard even of a
   store made after the MADV_FREE (the property cannot tell); such a store
   is lost only if it went through a TLB entry dirtier than its PTE, which
   TLB coherence reports.

3. **TLB coherence** (:meth:`History.user_access`): an access that used a
   cached translation (a TLB hit) is incoherent if

   a. a TLB flush of the mm covering the address *completed*
      (``flush_tlb_range`` returned) after the entry was filled — that
      flush had to remove it (a shootdown that missed a CPU, a flush that
      did not wait for an acknowledgement); or
   b. the entry allows more than the PTE does now — another page, a PTE
      no longer present, writable (or dirty, for a store: the store would
      not dirty the PTE) or executable where the PTE is not — and no
      writer can be between changing that PTE and flushing: nobody holds
      the mm's ``mmap_lock`` for write, nobody holds the PTL of the PTE's
      table, no ``mmu_gather`` is open on the mm
      (``mm.tlb_flush_pending``), and reclaim has no flush of it deferred
      (``mm.tlb_flush_batched``, try_to_unmap's batch).  Every writer of the model changes a
      PTE and flushes within one of those: wp_page_copy under the PTL
      (``ptep_clear_flush``), mprotect/munmap/mremap/fork under
      ``mmap_lock`` for write, madvise and truncation through an
      ``mmu_gather``, reclaim and migration through their batch (a PTE
      that became a migration entry allows nothing: an entry cached for
      the page it replaced is stale until the batch's flush).  A writer that returns without its flush leaves
      exactly such an entry (a TLB may cache a *less* permissive entry:
      the access faults and drops it, as after do_wp_page's reuse).

Violations are recorded as the accesses happen and reported by the step
invariant of the scenario (``check/scenarios/base.py``) at the step that
made them.
"""

from __future__ import annotations

from typing import Any

from specfault.mm.pgtable import (
    _PAGE_DIRTY,
    _PAGE_NX,
    _PAGE_PRESENT,
    _PAGE_RW,
    PTE_PFN_MASK,
    HugePmdView,
    is_migration_pte,
    pte_pfn,
    pte_present,
    pte_special,
    pte_to_swp_entry,
    swp_offset_pfn,
)
from specfault.mm.truncate import vmas_mapping

_MISSING = object()      # a translation never observed


# ------------------------------------------------------------------ rmap
def file_mappings(kernel: Any, inode: Any) -> list[Any]:
    """The VMAs that map ``inode``: what the file's ``i_mmap`` tree lists.
    The model has no i_mmap yet, so every live mm's VMAs of that file
    (``truncate.vmas_mapping``); once ``mm/rmap.py`` keeps the tree, this
    is the one line to change (return the tree's VMAs)."""
    out: list[Any] = []
    for mm in kernel.mms:
        if not mm.dead:
            out += vmas_mapping(mm, inode)
    return out


def rmap_problem(kernel: Any, vma: Any, addr: int, page: Any,
                 mappings: dict[int, list[Any]] | None = None) -> str | None:
    """None if the rmap can find the PTE at ``addr`` (in ``vma``) mapping
    ``page`` (a normal page: not the zero page), else what is wrong.
    ``mappings`` caches :func:`file_mappings` by inode within one check."""
    index = vma.linear_page_index(addr)
    if page.anon:
        av = page.mapping
        if av is None:
            return f"anonymous {page!r} at {addr:#x} in {vma.label()} has no anon_vma"
        if not any(a is av for a in vma.anon_vma_chain):
            return (f"anonymous {page!r} at {addr:#x} belongs to {av!r}, not reachable from "
                    f"{vma.label()} (its chain: {vma.anon_vma_chain})")
        if page.index != index:
            return (f"anonymous {page!r} at {addr:#x} has index {page.index:#x}, but "
                    f"{vma.label()} puts index {index:#x} there (rmap_walk would miss it)")
        return None
    inode = page.mapping
    if inode is None:
        return f"{page!r} mapped at {addr:#x} is neither anonymous nor in a page cache"
    if vma.vm_file is None or vma.vm_file.inode is not inode:
        return f"file {page!r} of {inode.path} mapped at {addr:#x} by {vma.label()} of another file"
    if inode.pages.get(page.index) is not page:
        return f"file {page!r} mapped at {addr:#x} is not in {inode.path}'s page cache at {page.index}"
    if page.index != index:
        return (f"file {page!r} at {addr:#x} has index {page.index}, but {vma.label()} maps "
                f"index {index} there")
    if mappings is None:
        mappings = {}
    vmas = mappings.get(id(inode))
    if vmas is None:
        vmas = mappings[id(inode)] = file_mappings(kernel, inode)
    if not any(v is vma for v in vmas):
        return f"{vma.label()} maps {inode.path} but is not among the file's mappings"
    return None


# ------------------------------------------------------- the recorder
def pte_table(mm: Any, addr: int) -> Any:
    """The live PTE table for ``addr`` (None if a level is missing or was
    freed; a huge PMD's HugePmdView) — the checker's own walk: it never
    raises."""
    t = mm.pgd
    for shift in (39, 30, 21):
        parent = t
        t = t.entries[(addr >> shift) & 511]
        if type(t) is int:
            return HugePmdView(parent, (addr >> 21) & 511)    # a huge PMD
        if t is None or t.freed_at is not None:
            return None
    return t


def _more_permissive(tlb_pte: int, pte: int, access: int) -> str | None:
    """Does the cached ``tlb_pte`` let ``access`` do what ``pte`` does not?"""
    if not pte & _PAGE_PRESENT:
        return "the PTE is no longer present"
    if (tlb_pte & PTE_PFN_MASK) != (pte & PTE_PFN_MASK):
        return f"the PTE now maps pfn {pte_pfn(pte):#x}, the entry {pte_pfn(tlb_pte):#x}"
    if access == 1 and not pte & _PAGE_RW:
        return "the PTE is read-only now"
    if access == 1 and tlb_pte & _PAGE_DIRTY and not pte & _PAGE_DIRTY:
        return "the PTE was cleaned (the store will not dirty it)"
    if access == 2 and pte & _PAGE_NX:
        return "the PTE is no longer executable"
    return None


_KIND = {0: "load", 1: "store", 2: "exec"}


class History:
    """The recorder of one execution: ``kernel.observer``.  The model calls
    :meth:`user_access` for every completed user access (mm/access.py) and
    :meth:`flush_done` when a TLB flush completes (mm/tlb.py); the
    scenario's step invariant calls :meth:`observe` after every step and
    reports :attr:`violations`."""

    def __init__(self, kernel: Any, region: list[tuple[int, int]]) -> None:
        self.kernel = kernel
        self.region_vpns = sorted({a >> 12 for lo, hi in region for a in range(lo, hi, 4096)})
        self.seq = 0
        self.violations: list[str] = []
        # no lost write: (mm, vpn) -> {offset: admissible byte values}
        self.adm: dict[tuple[Any, int], dict[int, set[int]]] = {}
        # the translations observed: (mm, vpn) -> Page (None: not mapped)
        self.mapped: dict[tuple[Any, int], Any] = {}
        # page -> the (mm, vpn) observed mapping it
        self.mapped_by: dict[Any, set[tuple[Any, int]]] = {}
        # an anonymous page no address maps any more -> the admissible
        # values it carried (mremap moves it; the destination inherits them)
        self.orphan: dict[Any, dict[int, set[int]]] = {}
        # TLB coherence: (cpu, mm, vpn) -> seq of the fill; mm -> flushes
        self.fills: dict[tuple[Any, Any, int], int] = {}
        self.flushes: dict[Any, list[tuple[int, int, int]]] = {}
        # what observe() walks: mm -> {PTE table index (vpn >> 9): vpns};
        # and the raw PTE (with its table) last seen for each (mm, vpn)
        self.tables: dict[Any, dict[int, set[int]]] = {}
        self.raw: dict[tuple[Any, int], tuple[Any, int]] = {}
        self.stores = self.loads = self.tlb_hits = 0
        # loads are judged once translations are observed after every step
        # (the explorer's step invariant); a driver that runs no invariant
        # (the direct driver) cannot see discards, so its loads are not
        self.observing = False

    # -- what the model reports --
    def flush_done(self, mm: Any, start: int, end: int) -> None:
        self.seq += 1
        self.flushes.setdefault(mm, []).append((self.seq, start >> 12, (end + 4095) >> 12))

    def user_access(self, mm: Any, cpu: Any, addr: int, access: int, data: bytes, pte: int,
                    page: Any, hit: bool) -> None:
        self.seq += 1
        vpn = addr >> 12
        key = (mm, vpn)
        self._observe_key(key)          # the translation as of this access
        if hit:
            self.tlb_hits += 1
            self._tlb_check(mm, cpu, addr, access, pte)
        elif cpu is not None:
            self.fills[(cpu, mm, vpn)] = self.seq
        if access == 1:
            self._store(key, addr & 0xFFF, data, page)
        elif access == 0 and (page.anon or page.zero):
            # a page-cache page also changes through the file (write(2),
            # truncation, hole punching), which no user store records
            self._load(key, addr, data, cpu)

    # -- TLB coherence --
    def _tlb_check(self, mm: Any, cpu: Any, addr: int, access: int, tlb_pte: int) -> None:
        vpn = addr >> 12
        filled = self.fills.get((cpu, mm, vpn), 0)
        who = f"cpu{cpu.id}" if cpu is not None else "a CPU"
        for seq, lo, hi in reversed(self.flushes.get(mm, ())):
            if seq <= filled:
                break
            if lo <= vpn < hi:
                self.violations.append(
                    f"TLB coherence: {who} {_KIND[access]} at {addr:#x} in {mm.label()} used a "
                    f"TLB entry ({tlb_pte:#x}) filled before a flush of "
                    f"{lo << 12:#x}-{hi << 12:#x} that completed: the flush missed it")
                return
        pt = pte_table(mm, addr)
        cur = pt.entries[vpn & 511] if pt is not None else 0
        why = _more_permissive(tlb_pte, cur, access)
        if why is None:
            return
        if mm.mmap_lock.writer is not None or mm.tlb_flush_pending > 0 or \
                mm.tlb_flush_batched or (pt is not None and pt.ptl.owner is not None):
            return      # a writer is between changing the PTE and its flush
        self.violations.append(
            f"TLB coherence: {who} {_KIND[access]} at {addr:#x} in {mm.label()} went through a "
            f"stale TLB entry {tlb_pte:#x} ({why}; PTE {cur:#x}) after the writer that changed "
            f"the PTE was done (no mmap_lock writer, PTL free, no mmu_gather open): its TLB "
            f"flush never came")

    # -- no lost write --
    def _store(self, key: tuple[Any, int], off: int, data: bytes, page: Any) -> None:
        self.stores += 1
        targets = [self.adm.setdefault(key, {})]
        for other in self.mapped_by.get(page, ()):
            if other != key:
                targets.append(self.adm.setdefault(other, {}))
        if page in self.orphan:
            targets.append(self.orphan[page])
        for i, b in enumerate(data):
            for adm in targets:
                adm[off + i] = {b}

    def _load(self, key: tuple[Any, int], addr: int, got: bytes, cpu: Any) -> None:
        self.loads += 1
        adm = self.adm.get(key)
        if not adm or not self.observing:
            return
        off = addr & 0xFFF
        for i, b in enumerate(got):
            want = adm.get(off + i)
            if want is not None and b not in want:
                mm = key[0]
                self.violations.append(
                    f"lost write: a load at {addr:#x} in {mm.label()} on cpu"
                    f"{cpu.id if cpu is not None else '?'} read {bytes(got)!r}, but byte "
                    f"{addr + i:#x} was last stored as {sorted(want)} and neither overwritten "
                    f"nor discarded since")
                return

    # -- translations --
    def _page_of(self, mm: Any, vpn: int) -> tuple[Any, bool]:
        """(the page the PTE maps or None, observable now)."""
        pt = pte_table(mm, vpn << 12)
        if pt is None:
            return None, True
        if pt.ptl.owner is not None:
            return None, False          # a PTL section: observe when it ends
        mem = self.kernel.mem
        return translation(pt.entries[vpn & 511], mem.pages, mem.zero_page), True

    def _observe_key(self, key: tuple[Any, int]) -> None:
        page, ok = self._page_of(*key)
        if ok:
            old = self.mapped.get(key, _MISSING)
            if old is not page:
                self._apply([(key, old, page)])

    def observe(self) -> None:
        """Diff the translations of the region and of every tracked address
        against what was last observed (called after every step).  Per PTE
        table: one walk, skipped whole while its PTL is held; per PTE: the
        page is looked up only when the entry's value changed."""
        self.observing = True
        kernel = self.kernel
        live = kernel.mms
        for mm in [m for m in self.tables if m.dead or m not in live]:
            self._forget(mm)
        changes: list[tuple[tuple[Any, int], Any, Any]] = []
        raw = self.raw
        mapped = self.mapped
        pages = kernel.mem.pages
        zero = kernel.mem.zero_page
        for mm in live:
            if mm.dead:
                continue
            groups = self.tables.get(mm)
            if groups is None:
                groups = self.tables[mm] = {}
                for vpn in self.region_vpns:
                    groups.setdefault(vpn >> 9, set()).add(vpn)
            for gi, vpns in groups.items():
                pt = pte_table(mm, gi << 21)
                if pt is not None and pt.ptl.owner is not None:
                    continue                # a PTL section: observe when it ends
                entries = pt.entries if pt is not None else None
                for vpn in vpns:
                    pte = entries[vpn & 511] if entries is not None else 0
                    key = (mm, vpn)
                    seen = raw.get(key)
                    if seen is not None and seen[0] is pt and seen[1] == pte:
                        continue
                    raw[key] = (pt, pte)
                    page = translation(pte, pages, zero)
                    old = mapped.get(key, _MISSING)
                    if old is not page:
                        changes.append((key, old, page))
        if changes:
            self._apply(changes)

    def _track(self, key: tuple[Any, int]) -> None:
        mm, vpn = key
        self.tables.setdefault(mm, {}).setdefault(vpn >> 9, set()).add(vpn)

    def _forget(self, mm: Any) -> None:
        """An exited mm: its translations and values go."""
        for vpns in self.tables.pop(mm, {}).values():
            for vpn in vpns:
                key = (mm, vpn)
                self.raw.pop(key, None)
                self.adm.pop(key, None)
                old = self.mapped.pop(key, None)
                users = self.mapped_by.get(old)
                if users is not None:
                    users.discard(key)
                    if not users:
                        del self.mapped_by[old]

    def _apply(self, changes: list[tuple[tuple[Any, int], Any, Any]]) -> None:
        zero = self.kernel.mem.zero_page
        # removals first: a page moved in this step leaves before it arrives
        for key, old, new in changes:
            if old is _MISSING or old is None:
                continue
            users = self.mapped_by.get(old)
            if users is not None:
                users.discard(key)
                if not users:
                    del self.mapped_by[old]
            if new is None:                       # discarded
                adm = self.adm.pop(key, None)
                if adm and old is not zero and old.anon and old not in self.mapped_by:
                    self.orphan[old] = adm        # it may reappear elsewhere (mremap)
        for key, old, new in changes:
            if old is _MISSING:
                self._track(key)
            self.mapped[key] = new
            if new is None:
                continue
            self.mapped_by.setdefault(new, set()).add(key)
            if old is None or old is _MISSING:
                carried = self.orphan.pop(new, None) if new is not zero else None
                if carried is not None:
                    self.adm[key] = carried       # followed the page
                elif old is None:
                    self.adm.pop(key, None)
            # old is a page: a direct switch (COW copy) keeps the values

    def final_sweep(self) -> str | None:
        """No lost write at the end, when nothing is in flight: observe the
        translations once more and load (from the page each address maps
        now) every byte that has admissible values — as a load by the
        program after its last step would."""
        if not self.observing:
            return None          # a driver without the step invariant
        # TLB coherence at the end: every writer is done, so a cached
        # entry that lets a load do what its PTE does not is stale for good
        # (a load on that CPU after the last step would use it)
        live = {id(mm): mm for mm in self.kernel.mms if not mm.dead}
        for cpu in self.kernel.cpus:
            for (mm_id, vpn), tlb_pte in sorted(cpu.tlb.items()):
                mm = live.get(mm_id)
                if mm is None:
                    continue
                pt = pte_table(mm, vpn << 12)
                cur = pt.entries[vpn & 511] if pt is not None else 0
                why = _more_permissive(tlb_pte, cur, 0)
                if why is not None:
                    return (f"TLB coherence: at the end, cpu{cpu.id} still caches {tlb_pte:#x} "
                            f"for {vpn << 12:#x} in {mm.label()} ({why}; PTE {cur:#x}): every "
                            f"writer is done, its TLB flush never came")
        self.observe()
        for (mm, vpn), adm in self.adm.items():
            page = self.mapped.get((mm, vpn))
            if page is None or not adm or not (page.anon or page.zero):
                continue
            for off, want in sorted(adm.items()):
                got = page.read(off, 1)[0]
                if got not in want:
                    return (f"lost write: at the end, byte {(vpn << 12) + off:#x} in "
                            f"{mm.label()} holds {got}, but it was last stored as "
                            f"{sorted(want)} and neither overwritten nor discarded since")
        return None

    # -- rmap at every step --
    def rmap_step(self, region: list[tuple[int, int]]) -> str | None:
        """Reverse-mapping consistency over ``region`` in every mm no
        writer holds, for PTEs whose PTL is free (see the module doc)."""
        kernel = self.kernel
        mappings: dict[int, list[Any]] = {}
        for mm in kernel.mms:
            if mm.dead or mm.mmap_lock.writer is not None or mm.mm_lock_seq & 1:
                continue
            for lo, hi in region:
                for addr in range(lo, hi, 4096):
                    pt = pte_table(mm, addr)
                    if pt is None or pt.ptl.owner is not None:
                        continue
                    pte = pt.entries[(addr >> 12) & 511]
                    if not pte or not pte_present(pte) or pte_special(pte):
                        continue
                    page = kernel.mem.pages.get(pte_pfn(pte))
                    vma = mm.mm_mt.find(addr)
                    if page is None or vma is None or vma.vm_start > addr:
                        continue          # the structural invariant's finding
                    bad = rmap_problem(kernel, vma, addr, page, mappings)
                    if bad is not None:
                        return f"rmap: {mm.label()}: {bad}"
        return None


def translation(pte: int, pages: dict[int, Any], zero: Any) -> Any:
    """The page whose contents ``pte`` stands for, as the lost-write
    property follows values: the page a present PTE maps (the zero page for
    a special one), the source page a migration entry names (in transit),
    or None — none, or a swap entry: discarded."""
    if not pte:
        return None
    if not pte_present(pte):
        if is_migration_pte(pte):
            return pages.get(swp_offset_pfn(pte_to_swp_entry(pte)))
        return None
    if pte_special(pte):
        return zero
    return pages.get(pte_pfn(pte))


def history_of(world: Any) -> History:
    """The recorder of ``world``'s execution: attached when the scenario's
    setup has built the world (``MmSpec.build``), else on first use by the
    step invariant (accesses before it are not recorded, which only leaves
    later loads less constrained)."""
    kernel = world.machine.kernel
    obs = kernel.observer
    if obs is None:
        obs = kernel.observer = History(kernel, world.region)
    return obs  # type: ignore[no-any-return]


def step_properties(world: Any) -> str | None:
    """The per-step part: translations observed, the rmap over the region,
    and the first violation the model's hooks recorded."""
    hist = history_of(world)
    if hist.violations:
        return hist.violations[0]
    hist.observe()
    return hist.rmap_step(world.region)


def final_properties(world: Any) -> str | None:
    """At the end: a violation recorded but not yet reported (none, when
    the step invariant ran after every step), then the last load of every
    address: each byte whose last store was not discarded must still hold
    it (:meth:`History.final_sweep`)."""
    obs = world.machine.kernel.observer
    if obs is None:
        return None
    if obs.violations:
        return obs.violations[0]
    return obs.final_sweep()


__all__ = ["History", "file_mappings", "final_properties", "history_of", "pte_table",
           "rmap_problem", "step_properties"]
