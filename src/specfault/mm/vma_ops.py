"""Changing the VMA tree (mm/vma.c): link, remove, split, merge, modify.

Every function here runs with ``mmap_lock`` held for write.  Each VMA a
function changes or removes is ``vma_start_write()``-locked first, so a
per-VMA-lock reader never sees it half-changed; a file VMA's i_mmap entry
and range change under its file's ``i_mmap_rwsem`` (write) — vma_prepare()
.. vma_complete() in Linux — so ``unmap_mapping_range`` (truncation) never
sees a split or merge half done (the ``i_mmap_locked`` arguments: the
caller already holds it); each tree update is
published with one store of the new root (``rcu_assign_pointer``) and the
replaced nodes and removed VMAs are freed through RCU — so a speculative
reader that looked them up under ``rcu_read_lock()`` can still read them.
"""

from __future__ import annotations

from typing import Any

from specfault.mm.huge_memory import vma_adjust_trans_huge
from specfault.mm.mmap_lock import vma_mark_attached, vma_mark_detached, vma_start_write
from specfault.mm.rmap import (
    anon_vma_chain_link,
    i_mmap_lock_write,
    i_mmap_unlock_write,
    vma_link_rmap,
    vma_mapping,
    vma_unlink_rmap,
)
from specfault.mm.vma import (
    VmArea,
    anon_vmas_compatible,
    can_merge_after,
    can_merge_before,
)
from specfault.runtime import Op, Store

DEFAULT_MAX_MAP_COUNT = 65530
ENOMEM = 12


async def mt_store(mm: Any, start: int, end: int, entry: Any) -> None:
    """vma_iter_store()/vma_iter_clear(): one tree update, published."""
    root, retired = mm.mm_mt.store(start, end, entry)
    await Store(mm.mm_mt, "root", root)          # rcu_assign_pointer()
    if retired:
        await retire(mm, retired, "maple tree nodes")


async def retire(mm: Any, objs: list[Any], what: str, pinned: bool = False) -> None:
    """Free objects a lockless reader may still see: after a grace period,
    or at once when ``vma_free="immediate"`` (a mutant: readers under RCU
    then touch freed memory).  ``pinned`` (VMAs, knob spf_vma_pin): a VMA
    still pinned by a speculative fault (``vm_ref_count > 0``) is only
    marked free-pending; the put_vma that drops the last pin frees it."""
    site = f"{what} freed by {mm.label()}"

    def free() -> None:
        for obj in objs:
            if pinned:
                vma_free_or_defer(obj, site)
            else:
                obj.poison(site)

    if mm.config.vma_free == "immediate":
        free()
    else:
        # declared for the explorer: a plain free poisons the objects; a
        # pinned one (vma_free_or_defer) reads each VMA's vm_ref_count and
        # either poisons it or marks it free-pending — every field of the
        # VMA, as the PutVma that frees it declares.  (Its entry in the
        # kernel's vma_free_deferred is keyed by the VMA: only that VMA's
        # free and last put touch it, both declaring the VMA.)
        fp = tuple((obj, "*", "w") for obj in objs)
        await mm.kernel.rcu.call_rcu(free, what, fp)


async def vma_prepare(vma: VmArea) -> Any:
    """vma_prepare(): take the i_mmap_rwsem (write) of ``vma``'s file before
    changing its range or its neighbours'; returns the mapping to hand to
    :func:`vma_complete` (None: anonymous, nothing taken)."""
    mapping = vma_mapping(vma)
    if mapping is not None:
        await i_mmap_lock_write(mapping)
    return mapping


async def vma_complete(mapping: Any) -> None:
    """vma_complete(): drop what :func:`vma_prepare` took."""
    if mapping is not None:
        await i_mmap_unlock_write(mapping)


async def vma_link(mm: Any, vma: VmArea, i_mmap_locked: bool = False) -> None:
    """Insert a new VMA: write-lock it, store it, attach it, link it into
    the reverse map (its file's i_mmap — vma_link_file(), under the file's
    i_mmap_rwsem unless the caller holds it — and its anon_vmas'
    rb_roots)."""
    await vma_start_write(vma)
    await mt_store(mm, vma.vm_start, vma.vm_end, vma)
    await vma_mark_attached(vma)
    mapping = None if i_mmap_locked else await vma_prepare(vma)
    vma_link_rmap(vma)
    await vma_complete(mapping)
    mm.map_count += 1


async def unlink_vma(vma: VmArea, i_mmap_locked: bool = False) -> None:
    """unlink_anon_vmas() + unlink_file_vma() (the latter under the file's
    i_mmap_rwsem, unless the caller holds it): what free_pgtables() does
    for each VMA before it frees the VMA's page tables — so a truncation
    that found the VMA in i_mmap walks tables that are still there.  A
    VMA already unlinked is left alone."""
    if not vma.vm_rmap_linked:
        return
    mapping = None if i_mmap_locked else await vma_prepare(vma)
    vma_unlink_rmap(vma)
    await vma_complete(mapping)


async def vm_area_free(mm: Any, vma: VmArea, i_mmap_locked: bool = False) -> None:
    """remove_vma(): the VMA is out of the tree (and its PTEs zapped);
    unlink it from the reverse map if free_pgtables' pass did not
    (:func:`unlink_vma`) and free it (through RCU)."""
    await unlink_vma(vma, i_mmap_locked)
    if vma.vm_file is not None:
        mm.kernel.fs.fput(vma.vm_file)
    # knob spf_vma_pin (Dufour's SPF): the free honours the speculative
    # readers' vm_ref_count — without it, a reader that re-reads its VMA's
    # sequence after leaving the RCU section of the lookup reads freed memory
    pinned = bool(mm.config.knob("spf_vma_pin"))
    if mm.config.knob("vma_typesafe_rcu"):
        # SLAB_TYPESAFE_BY_RCU: the object stays a VMA and may be reused at
        # once (readers must re-check what they locked).  A pinned VMA goes
        # to the freelist only at its last put_vma (Dufour's series predates
        # type-safe VMAs; this keeps its rule "a pinned VMA is not reused")
        if pinned:
            await VmaFreeOrDefer(vma, f"vma {vma.vm_start:#x}-{vma.vm_end:#x} freed by {mm.label()}")
        else:
            mm.kernel.vma_freelist.append(vma)
        return
    await retire(mm, [vma], f"vma {vma.vm_start:#x}-{vma.vm_end:#x}", pinned)


# ------------------------------------------- Dufour's VMA pin (get/put_vma)
def _free_now(vma: VmArea, site: str) -> None:
    """The VMA's memory goes: poisoned (RCU-freed VMAs) or back on the
    freelist (vma_typesafe_rcu)."""
    kernel = vma.vm_mm.kernel
    kernel.vma_free_deferred.pop(id(vma), None)
    if vma.vm_mm.config.knob("vma_typesafe_rcu"):
        kernel.vma_freelist.append(vma)
    else:
        vma.poison(site)


def vma_free_or_defer(vma: VmArea, site: str) -> None:
    """The free side of the pin, atomically: free the VMA now, or — while a
    speculative fault holds it — leave that to the last put_vma.  Safe to
    defer: the VMA is out of the tree (and, RCU-freed, its grace period is
    over), so no new reader can find and pin it."""
    if vma.vm_ref_count > 0:
        vma.vm_free_pending = site
        vma.vm_mm.kernel.vma_free_deferred[id(vma)] = vma
    else:
        _free_now(vma, site)


class VmaFreeOrDefer(Op):
    """vm_area_free() of a type-safe (recycled) VMA under spf_vma_pin: one
    atomic step, so it orders against GetVma/PutVma."""

    __slots__ = ("vma", "site")
    kind = "atomic"

    def __init__(self, vma: VmArea, site: str) -> None:
        self.vma = vma
        self.site = site

    def perform(self) -> None:
        vma_free_or_defer(self.vma, self.site)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.vma, "vm_ref_count", "w"),)

    def describe(self) -> str:
        return f"vm_area_free {self.vma.label()} (unless pinned)"


async def remove_from_tree(mm: Any, vma: VmArea) -> None:
    """Detach ``vma`` (its range must not have been given to another VMA)."""
    await vma_start_write(vma)
    await mt_store(mm, vma.vm_start, vma.vm_end, None)
    await vma_mark_detached(vma)
    mm.map_count -= 1


async def split_vma(mm: Any, vma: VmArea, addr: int, new_below: bool) -> VmArea | int:
    """__split_vma(): split at ``addr``; the new VMA takes the part below
    (new_below) or above.  Returns the new VMA, or -ENOMEM."""
    assert vma.vm_start < addr < vma.vm_end, "split_vma: address outside the vma"
    if mm.map_count >= DEFAULT_MAX_MAP_COUNT:
        return -ENOMEM
    await vma_adjust_trans_huge(vma, addr)
    new = vma.dup()
    if new_below:
        new.vm_end = addr
    else:
        new.vm_start = addr
        new.vm_pgoff += (addr - vma.vm_start) >> 12
    await vma_start_write(vma)
    await vma_start_write(new)
    mapping = await vma_prepare(vma)
    if new_below:
        await Store(vma, "vm_start", addr)
        await Store(vma, "vm_pgoff", vma.vm_pgoff + ((addr - new.vm_start) >> 12))
    else:
        await Store(vma, "vm_end", addr)
    await vma_link(mm, new, i_mmap_locked=True)
    await vma_complete(mapping)
    return new


async def vma_set_range(mm: Any, vma: VmArea, start: int, end: int, pgoff: int,
                        i_mmap_locked: bool = False) -> None:
    """Change a linked VMA's range and update the tree over the union.  The
    range changes under the file's i_mmap_rwsem (taken here unless the
    caller holds it).  A boundary that moves inside the old range splits a
    huge PMD across it first (vma_adjust_trans_huge)."""
    for addr in (start, end):
        if vma.vm_start < addr < vma.vm_end:
            await vma_adjust_trans_huge(vma, addr)
    await vma_start_write(vma)
    old_start, old_end = vma.vm_start, vma.vm_end
    mapping = None if i_mmap_locked else await vma_prepare(vma)
    await Store(vma, "vm_start", start)
    await Store(vma, "vm_end", end)
    await Store(vma, "vm_pgoff", pgoff)
    await vma_complete(mapping)
    if old_start < start:
        await mt_store(mm, old_start, start, None)
    if end < old_end:
        await mt_store(mm, end, old_end, None)
    await mt_store(mm, start, end, vma)


def _take_anon_vma(target: VmArea, *sources: VmArea | None) -> None:
    """dup_anon_vma(): a VMA growing over a range that had anon pages must
    have their anon_vma."""
    if target.anon_vma is not None:
        return
    for src in sources:
        if src is not None and src.anon_vma is not None:
            anon_vma_chain_link(target, src.anon_vma, list(src.anon_vma_chain))
            return


async def vma_merge_new_range(mm: Any, prev: VmArea | None, nxt: VmArea | None, start: int,
                              end: int, flags: int, file: Any, pgoff: int,
                              anon: Any = None, src: VmArea | None = None) -> VmArea | None:
    """vma_merge_new_range(): can [start, end) (not in the tree yet) extend
    ``prev`` and/or ``nxt``?  Returns the VMA now covering it, or None.
    ``anon``/``src`` are set when the range brings anon pages (mremap)."""
    npages = (end - start) >> 12
    left = can_merge_after(prev, start, flags, file, pgoff, anon, src)
    right = can_merge_before(nxt, end, flags, file, pgoff, npages, anon, src)
    if left and right and prev is not None and nxt is not None \
            and not anon_vmas_compatible(prev, nxt):
        right = False
    if left and right:
        assert prev is not None and nxt is not None
        await vma_start_write(nxt)
        _take_anon_vma(prev, nxt, src)
        await remove_from_tree(mm, nxt)
        mapping = await vma_prepare(prev)        # the merge as one i_mmap section
        await vma_set_range(mm, prev, prev.vm_start, nxt.vm_end, prev.vm_pgoff, True)
        await vm_area_free(mm, nxt, i_mmap_locked=True)
        await vma_complete(mapping)
        return prev
    if left:
        assert prev is not None
        _take_anon_vma(prev, src)
        await vma_set_range(mm, prev, prev.vm_start, end, prev.vm_pgoff)
        return prev
    if right:
        assert nxt is not None
        _take_anon_vma(nxt, src)
        await vma_set_range(mm, nxt, start, nxt.vm_end, pgoff)
        return nxt
    return None


async def _free_merged(mm: Any, vma: VmArea) -> None:
    """Free a VMA a merge absorbed (remove_vma).  Caller holds the file's
    i_mmap_rwsem for write (the merge's vma_prepare)."""
    # knob vma_merge_free_immediate (a mutant): "it is out of the tree
    # already" — freed at once, not after a grace period: a lockless
    # lookup that found it before the merge reads freed memory
    if mm.config.knob("vma_merge_free_immediate"):
        vma_unlink_rmap(vma)                     # under the caller's i_mmap_rwsem
        if vma.vm_file is not None:
            mm.kernel.fs.fput(vma.vm_file)
        vma.poison(f"vma {vma.vm_start:#x}-{vma.vm_end:#x} freed at once by a merge of {mm.label()}")
        return
    await vm_area_free(mm, vma, i_mmap_locked=True)


async def vma_modify(mm: Any, prev: VmArea | None, vma: VmArea, start: int, end: int,
                     newflags: int) -> VmArea | int:
    """vma_modify_flags(): give [start, end) of ``vma`` the flags
    ``newflags``, merging with neighbours when the rules allow, splitting
    otherwise.  ``prev`` is the VMA before ``vma`` (or ``vma`` itself when
    start is inside it).  Returns the VMA that now covers [start, end) —
    with its flags NOT yet changed — or -errno."""
    nxt = mm.mm_mt.find(vma.vm_end)
    left_side = start == vma.vm_start
    right_side = end == vma.vm_end
    pgoff = vma.vm_pgoff + ((start - vma.vm_start) >> 12)
    npages = (end - start) >> 12
    anon = vma.anon_vma
    merge_left = left_side and prev is not vma and can_merge_after(
        prev, start, newflags, vma.vm_file, pgoff, anon, vma)
    merge_right = right_side and can_merge_before(
        nxt, end, newflags, vma.vm_file, pgoff, npages, anon, vma)
    if merge_left and merge_right and prev is not None and nxt is not None \
            and not anon_vmas_compatible(prev, nxt):
        merge_right = False
    if merge_left and merge_right:
        assert prev is not None and nxt is not None
        _take_anon_vma(prev, vma, nxt)
        await remove_from_tree(mm, vma)
        await remove_from_tree(mm, nxt)
        mapping = await vma_prepare(prev)        # the merge as one i_mmap section
        await vma_set_range(mm, prev, prev.vm_start, nxt.vm_end, prev.vm_pgoff, True)
        await _free_merged(mm, vma)
        await _free_merged(mm, nxt)
        await vma_complete(mapping)
        return prev
    if merge_left:
        assert prev is not None
        _take_anon_vma(prev, vma)
        if right_side:
            await remove_from_tree(mm, vma)
        mapping = await vma_prepare(prev)
        if right_side:
            await vma_set_range(mm, prev, prev.vm_start, end, prev.vm_pgoff, True)
            await _free_merged(mm, vma)
        else:
            # vma gives [start, end) to prev: no moment where neither maps it
            await vma_set_range(mm, vma, end, vma.vm_end, vma.vm_pgoff + npages, True)
            await vma_set_range(mm, prev, prev.vm_start, end, prev.vm_pgoff, True)
        await vma_complete(mapping)
        return prev
    if merge_right:
        assert nxt is not None
        _take_anon_vma(nxt, vma)
        if left_side:
            await remove_from_tree(mm, vma)
        mapping = await vma_prepare(nxt)
        if left_side:
            await vma_set_range(mm, nxt, start, nxt.vm_end, pgoff, True)
            await _free_merged(mm, vma)
        else:
            await vma_set_range(mm, vma, vma.vm_start, start, vma.vm_pgoff, True)
            await vma_set_range(mm, nxt, start, nxt.vm_end, pgoff, True)
        await vma_complete(mapping)
        return nxt
    # no merge: split off what is outside [start, end); vma keeps the middle
    if vma.vm_start < start:
        new = await split_vma(mm, vma, start, new_below=True)
        if isinstance(new, int):
            return new
    if vma.vm_end > end:
        new = await split_vma(mm, vma, end, new_below=False)
        if isinstance(new, int):
            return new
    return vma
