"""struct vm_area_struct and struct anon_vma, with Linux's flag values and
the rules that decide whether two VMAs may merge.

Fields
------
VmArea
# protected by mmap_lock (write) to change; readers hold mmap_lock (read),
# the VMA lock (vma_start_read), or copy it speculatively and validate with
# mm_lock_seq.  Writers vma_start_write() before changing any of them.
    vm_start, vm_end, vm_pgoff, vm_flags, vm_page_prot, vm_file
# set when installed, then read-only
    vm_special     the name of a special mapping (_install_special_mapping:
                   "[vdso]", "[vvar]", "[vvar_vclock]"), else None
# protected by mmap_lock (read) + mm.page_table_lock to set (anon_vma_prepare)
    anon_vma, anon_vma_chain
# the per-VMA lock (Linux 6.4+): see mm/mmap_lock.py
    vm_lock_seq    mm_lock_seq value of the writer holding it, -1 if none
    vm_refcnt      0 detached; 1 attached (in the tree); +1 per reader in
                   vma_start_read(); +VMA_LOCK_OFFSET while a writer drains
# Laurent Dufour's SPF (protocol "dufour"; knobs spf_vma_refcount, spf_vma_pin)
# atomic (GetVma / PutVma, and VmaFreeOrDefer / the VMA's RCU callback on the
# free side); never reset when a recycled VMA is reused (a slab-constructor
# field: a reader may hold a pin on a VMA sitting on the freelist)
    vm_ref_count   +1 per speculative attempt using the VMA (get_vma after the
                   lookup, inside rcu_read_lock; put_vma when the attempt ends
                   or aborts).  With spf_vma_pin the free honours it; without
                   (spf_vma_refcount alone, the simulator's cost knob for the
                   speculative protocol) it is a cost only
# written by the free side only when vm_ref_count > 0 (the RCU callback, or
# VmaFreeOrDefer with vma_typesafe_rcu), cleared by the PutVma that drops the
# last pin and frees the VMA then; only with spf_vma_pin
    vm_free_pending  None, or the free site: the VMA is out of the tree, its
                   grace period is over, and the last put_vma frees it
# the reverse map (mm/rmap.py): changed under mmap_lock (write) and, for a
# file VMA, its file's i_mmap_rwsem (write); read by unmap_mapping_range
# under i_mmap_rwsem (read) and by the reclaim walkers under rcu_read_lock
    vm_rmap_linked True while the VMA is in its file's i_mmap and in the
                   rb_root of each anon_vma of its chain
AnonVma (struct anon_vma)
# immutable once made (by anon_vma_prepare under page_table_lock, or by
# anon_vma_fork under the parent's mmap_lock write)
    id, parent, root
# the interval tree of the VMAs linked to it (mm/rmap.py: its lock rule)
    rb_root
"""

from __future__ import annotations

import itertools
from typing import Any

from specfault.mm.interval_tree import VmaIntervalTree
from specfault.mm.pgtable import vm_get_page_prot
from specfault.runtime import KObject
from specfault.runtime.ops import UNDECLARED_WRITES

VM_NONE = 0x0
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_GROWSDOWN = 0x100
VM_UFFD_MISSING = 0x200
VM_PFNMAP = 0x400
VM_UFFD_WP = 0x1000
VM_LOCKED = 0x2000
VM_IO = 0x4000
VM_SEQ_READ = 0x8000
VM_RAND_READ = 0x10000
VM_DONTCOPY = 0x20000
VM_DONTEXPAND = 0x40000
VM_LOCKONFAULT = 0x80000
VM_ACCOUNT = 0x100000
VM_NORESERVE = 0x200000
VM_HUGETLB = 0x400000
VM_SYNC = 0x800000
VM_PAT = 0x01000000               # VM_ARCH_1 on x86
VM_WIPEONFORK = 0x02000000
VM_DONTDUMP = 0x04000000
VM_SOFTDIRTY = 0x08000000
VM_MIXEDMAP = 0x10000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000         # KSM may merge identical pages
VM_DROPPABLE = 1 << 40            # MAP_DROPPABLE (64-bit only)

# VM_SPECIAL: mappings of no struct page or that never grow or merge
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP

VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC
VM_MAY_FLAGS = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
# VM_DATA_DEFAULT_FLAGS on x86-64 (brk, and what anon mmap adds)
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC

_anon_vma_ids = itertools.count(1)


class AnonVma:
    """struct anon_vma: the reverse-map root for a VMA's anonymous pages.
    Forked children get their own, linked to the parent's (anon_vma_fork)."""

    __slots__ = ("id", "parent", "root", "rb_root")

    def __init__(self, parent: AnonVma | None = None) -> None:
        self.id = next(_anon_vma_ids)
        self.parent = parent
        self.root: AnonVma = parent.root if parent is not None else self
        self.rb_root = VmaIntervalTree()

    def __repr__(self) -> str:
        return f"<anon_vma {self.id}>"


class VmArea(KObject):
    __slots__ = ("vm_mm", "vm_start", "vm_end", "vm_pgoff", "vm_flags", "vm_page_prot", "vm_file",
                 "anon_vma", "anon_vma_chain", "vm_lock_seq", "vm_refcnt", "vm_ref_count",
                 "vm_free_pending", "vm_special", "vm_rmap_linked")

    def __init__(self, mm: Any, start: int, end: int, flags: int, pgoff: int,
                 file: Any = None) -> None:
        super().__init__()
        self.vm_mm = mm
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = flags
        self.vm_page_prot = vm_get_page_prot(flags, file)
        self.vm_pgoff = pgoff
        self.vm_file = file
        self.anon_vma: AnonVma | None = None
        self.anon_vma_chain: list[AnonVma] = []
        self.vm_lock_seq = -1
        self.vm_refcnt = 0
        self.vm_ref_count = 0      # Dufour's SPF only (knob spf_vma_refcount)
        self.vm_free_pending: str | None = None    # knob spf_vma_pin only
        self.vm_special: str | None = None
        self.vm_rmap_linked = False

    @classmethod
    def alloc(cls, mm: Any, start: int, end: int, flags: int, pgoff: int,
              file: Any = None) -> VmArea:
        """vm_area_alloc().  With knob vma_typesafe_rcu (vm_area_cachep is
        SLAB_TYPESAFE_BY_RCU in Linux 6.15+), a freed VMA object is reused
        at once — a lockless reader holding a pointer may find it
        describing another mapping, even of another mm."""
        free = mm.kernel.vma_freelist
        if free:
            vma = free.pop()
            # vm_ref_count survives reuse, like a field the slab constructor
            # sets once: a speculative reader (Dufour's SPF) may have pinned
            # the object while it sat on the freelist, and drops its pin later
            pins = vma.vm_ref_count
            vma.__init__(mm, start, end, flags, pgoff, file)  # type: ignore[misc]
            vma.vm_ref_count = pins
            UNDECLARED_WRITES[0] += 1     # every field rewritten, outside any op
            return vma
        return cls(mm, start, end, flags, pgoff, file)

    def dup(self) -> VmArea:
        """vm_area_dup(): a copy sharing file and anon_vma chain entries."""
        new = VmArea.alloc(self.vm_mm, self.vm_start, self.vm_end, self.vm_flags, self.vm_pgoff,
                           self.vm_file)
        new.vm_page_prot = self.vm_page_prot
        new.vm_special = self.vm_special
        if self.vm_file is not None:
            self.vm_file.f_count += 1                       # get_file()
        new.anon_vma = self.anon_vma
        new.anon_vma_chain = list(self.anon_vma_chain)   # anon_vma_clone()
        return new

    @property
    def detached(self) -> bool:
        return self.vm_refcnt == 0

    def snapshot(self) -> VmArea:
        """``pvma = *vma``: a private copy for a speculative fault (no
        references taken; it is never linked or freed)."""
        new = VmArea.__new__(VmArea)
        new.freed_at = None
        new.vm_free_pending = None
        new.vm_rmap_linked = False
        for name in ("vm_mm", "vm_start", "vm_end", "vm_pgoff", "vm_flags", "vm_page_prot",
                     "vm_file", "anon_vma", "anon_vma_chain", "vm_lock_seq", "vm_refcnt", "vm_ref_count",
                     "vm_special"):
            setattr(new, name, getattr(self, name))
        return new

    def set_flags(self, flags: int) -> None:
        self.vm_flags = flags
        self.vm_page_prot = vm_get_page_prot(flags, self.vm_file)

    def pages(self) -> int:
        return (self.vm_end - self.vm_start) >> 12

    def linear_page_index(self, addr: int) -> int:
        return ((addr - self.vm_start) >> 12) + self.vm_pgoff

    def is_anonymous(self) -> bool:
        return self.vm_file is None

    def is_cow_mapping(self) -> bool:
        return (self.vm_flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE

    def is_fork_child(self) -> bool:
        """vma_is_fork_child(): has an anon_vma inherited from a parent."""
        return self.anon_vma is not None and len(self.anon_vma_chain) != 1

    def label(self) -> str:
        return f"vma {self.vm_start:#x}-{self.vm_end:#x}"

    def __repr__(self) -> str:
        return f"<VmArea {self.vm_start:#x}-{self.vm_end:#x} flags={self.vm_flags:#x} pgoff={self.vm_pgoff:#x}>"


# --------------------------------------------------------------- merge rules
def mergeable_anon_vma(src_anon: AnonVma | None, src: VmArea | None, tgt: VmArea) -> bool:
    """is_mergeable_anon_vma() (mm/vma.c, 6.16+): may ``tgt`` absorb a range
    whose anon_vma is ``src_anon`` (``src`` the VMA it comes from, if any)?
    A forked child's anon_vma is never spread to a neighbour, nor is a
    neighbour's spread into a forked child."""
    tgt_anon = tgt.anon_vma
    if tgt_anon is None and src_anon is not None:
        return src is None or not src.is_fork_child()
    if tgt_anon is not None and src_anon is None:
        return not tgt.is_fork_child()
    return src_anon is tgt_anon


def is_mergeable_vma(vma: VmArea, flags: int, file: Any) -> bool:
    """Same flags (but VM_SOFTDIRTY) and the same file."""
    return not ((vma.vm_flags ^ flags) & ~VM_SOFTDIRTY) and vma.vm_file is file


def can_merge_after(prev: VmArea | None, start: int, flags: int, file: Any, pgoff: int,
                    anon: AnonVma | None, src: VmArea | None) -> bool:
    """can_vma_merge_left(): may ``prev`` be extended over [start, ...)?"""
    return (prev is not None and prev.vm_end == start and is_mergeable_vma(prev, flags, file)
            and mergeable_anon_vma(anon, src, prev)
            and prev.vm_pgoff + prev.pages() == pgoff)


def can_merge_before(nxt: VmArea | None, end: int, flags: int, file: Any, pgoff: int,
                     npages: int, anon: AnonVma | None, src: VmArea | None) -> bool:
    """can_vma_merge_right() without the prev/next cross-check."""
    return (nxt is not None and nxt.vm_start == end and is_mergeable_vma(nxt, flags, file)
            and mergeable_anon_vma(anon, src, nxt)
            and nxt.vm_pgoff == pgoff + npages)


def anon_vmas_compatible(a: VmArea, b: VmArea) -> bool:
    """are_anon_vmas_compatible(): prev and next may become one VMA."""
    if a.anon_vma is None or b.anon_vma is None:
        return True
    return a.anon_vma is b.anon_vma


def anon_vma_compatible(a: VmArea, b: VmArea) -> bool:
    """anon_vma_compatible() (mm/rmap.c): may b reuse a's anon_vma?"""
    return (a.vm_end == b.vm_start and a.vm_file is b.vm_file
            and not ((a.vm_flags ^ b.vm_flags) & ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY))
            and b.vm_pgoff == a.vm_pgoff + ((b.vm_start - a.vm_start) >> 12))


def reusable_anon_vma(old: VmArea, a: VmArea, b: VmArea) -> AnonVma | None:
    if anon_vma_compatible(a, b):
        av = old.anon_vma
        if av is not None and len(old.anon_vma_chain) == 1:
            return av
    return None
