"""The swap cache (mm/swap_state.c) and swap I/O (mm/page_io.c).

A folio being swapped out or in sits in the swap cache, indexed by its
swap entry, so that every PTE holding the entry finds the same folio (two
swap-ins of one entry share it; a swap-out in progress is found by a
fault).  The cache holds one reference to the folio and the slot's
SWAP_HAS_CACHE bit (swapfile.py).

Locks.  Linux: the swap cache's xarray lock for insertions and removals,
and the folio lock (PG_locked) around every change of PG_swapcache and
folio->swap; the slot's swap_map under si->lock.  The model: each
function below changes the cache in one step (op atomicity), callers hold
the folio lock where Linux's do (add_to_swap, folio_free_swap,
__remove_mapping), and ``free_swap_and_cache`` tries the folio lock as
Linux's folio_trylock does (a held lock: the folio is left in the cache).

Fields
------
Kernel.swap_cache (swapper_spaces)
# the swap cache's lock (op atomicity)
    entry -> Page
"""

from __future__ import annotations

from typing import Any

from specfault.mm.page import (  # noqa: F401  (the folio lock, re-exported)
    Page,
    folio_lock,
    folio_lock_of,
    folio_test_locked,
    folio_trylock,
    folio_unlock,
    put_page,
)
from specfault.mm.pgtable import swp_offset
from specfault.mm.swapfile import (
    SWAP_HAS_CACHE,
    folio_alloc_swap,
    get_swap_device,
    put_swap_folio,
    swap_count,
)
from specfault.runtime import ModelBug, Op, Work


class SwapCacheGetFolio(Op):
    """swap_cache_get_folio() (filemap_get_folio + folio_try_get under
    RCU): the folio the swap cache holds for ``entry`` with a reference
    taken in the same step, or None.  One op: a lookup followed by a
    separate get_page could take a reference on a folio reclaim freed in
    between."""

    __slots__ = ("kernel", "entry")
    kind = "swap_cache_get"

    def __init__(self, kernel: Any, entry: int) -> None:
        self.kernel = kernel
        self.entry = entry

    def perform(self) -> Page | None:
        page: Page | None = self.kernel.swap_cache.get(self.entry)
        if page is not None:
            if page.freed:
                raise ModelBug(f"swap cache holds freed {page!r}")
            page.refcount += 1
        return page

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.kernel, "swap_cache", "w"),)

    def describe(self) -> str:
        return f"swap_cache_get_folio {self.entry:#x}"


def swap_cache_get_folio(kernel: Any, entry: int) -> SwapCacheGetFolio:
    """``folio = await swap_cache_get_folio(kernel, entry)``: see
    :class:`SwapCacheGetFolio` (a reference is taken)."""
    return SwapCacheGetFolio(kernel, entry)


def add_to_swap_cache(kernel: Any, page: Page, entry: int) -> None:
    """add_to_swap_cache(): the folio (locked by the caller) enters the
    cache for ``entry``, whose SWAP_HAS_CACHE the caller holds; the cache
    takes a reference."""
    if entry in kernel.swap_cache:
        raise ModelBug(f"add_to_swap_cache: entry {entry:#x} already cached")
    page.swap = entry
    page.swapcache = True
    page.refcount += 1
    kernel.swap_cache[entry] = page


def __delete_from_swap_cache(kernel: Any, page: Page) -> None:
    """Take the folio out of the cache and give the slot's SWAP_HAS_CACHE
    back (the cache's reference is the caller's to drop)."""
    entry = page.swap
    if kernel.swap_cache.get(entry) is not page:
        raise ModelBug(f"delete_from_swap_cache: {page!r} not cached at {entry:#x}")
    del kernel.swap_cache[entry]
    page.swapcache = False
    page.swap = 0
    put_swap_folio(kernel, entry)


async def delete_from_swap_cache(kernel: Any, page: Page) -> None:
    """delete_from_swap_cache(): out of the cache, the cache's reference
    dropped.  Caller holds the folio lock."""
    __delete_from_swap_cache(kernel, page)
    await put_page(kernel.mem, page)


def add_to_swap(kernel: Any, page: Page) -> bool:
    """add_to_swap(): give an anonymous folio (locked, isolated) a swap
    slot and put it in the swap cache, dirty (its contents are not on the
    device yet).  False when no slot is free — no swap device, or swap
    full: the folio stays (shrink_folio_list activates it)."""
    entry = folio_alloc_swap(kernel)
    if not entry:
        return False
    add_to_swap_cache(kernel, page, entry)
    page.dirty = True            # folio_mark_dirty(): must be written out
    return True


async def folio_free_swap(kernel: Any, page: Page) -> bool:
    """folio_free_swap(): drop the swap slot of a folio in the swap cache
    when no swap PTE refers to it any more (the folio then holds the only
    copy of the data: it becomes dirty).  Caller holds the folio lock."""
    if not page.swapcache or swap_count(kernel, page.swap):
        return False
    await delete_from_swap_cache(kernel, page)
    page.dirty = True
    return True


def free_swap_and_cache(kernel: Any, entry: int) -> None:
    """free_swap_and_cache(): a swap PTE was zapped: drop its reference to
    the slot; when only the swap cache still holds the slot and its folio
    is neither mapped nor locked (folio_trylock, __try_to_reclaim_swap
    with TTRS_UNMAPPED), free the folio's slot and the cache's reference
    too.  Called under the PTL of the zapped PTE (the model: in the same
    step as the zap)."""
    si = get_swap_device(kernel, entry)
    if si is None:
        raise ModelBug(f"free_swap_and_cache: bad swap entry {entry:#x}")
    off = swp_offset(entry)
    have = si.swap_map[off]
    if not have & ~SWAP_HAS_CACHE:
        raise ModelBug(f"free_swap_and_cache: {entry:#x} has no reference")
    si.swap_map[off] = have - 1
    if have - 1 == 0:
        si.inuse_pages -= 1
        si.data.pop(off, None)
        kernel.count("swap_slot_free")
        return
    if have - 1 != SWAP_HAS_CACHE:
        return
    page = kernel.swap_cache.get(entry)
    if page is None or page.mapcount or folio_test_locked(page):
        return                      # the folio's owner (or reclaim) frees it later
    __delete_from_swap_cache(kernel, page)
    kernel.mem.put_page(page)


def free_swap_cache(kernel: Any, page: Page) -> None:
    """free_swap_cache() (free_pages_and_swap_cache, at tlb_finish_mmu): a
    zapped folio left in the swap cache, mapped nowhere and referenced by
    no swap PTE, leaves it — unless its lock is held (folio_trylock fails:
    its owner decides).  One step with the caller's put_page."""
    if page.mapcount or folio_test_locked(page) or swap_count(kernel, page.swap):
        return
    __delete_from_swap_cache(kernel, page)
    kernel.mem.put_page(page)


async def swap_writepage(kernel: Any, page: Page) -> bool:
    """swap_writeout(): write a dirty swap-cache folio to its slot (slow
    I/O: the simulator charges ``swap_write``; the explorer may run other
    tasks meanwhile) — unless it is zero-filled: then the slot is only
    marked so in the device's zeromap (is_folio_zero_filled,
    swap_zeromap_folio_set: no I/O, no pswpout) and a swap-in of it reads
    nothing.  Returns True if I/O was submitted (False: the folio is clean
    at once, as after a synchronous write).  Caller holds the folio lock;
    the PTEs are gone (or write-protected) and their TLB entries flushed,
    so the bytes cannot change under the write."""
    si = get_swap_device(kernel, page.swap)
    assert si is not None
    page.dirty = False                     # folio_clear_dirty_for_io()
    off = swp_offset(page.swap)
    if page.data is None or not any(page.data):
        si.data.pop(off, None)             # the zeromap: absent data reads as zeroes
        return False
    await Work("swap_write")
    si.data[off] = bytes(page.data)
    kernel.count("pswpout")
    return True


def swap_read_data(kernel: Any, entry: int) -> bytearray | None:
    """The bytes of slot ``entry`` (None: zero-filled, in the zeromap —
    swap_read_folio_zeromap: no I/O, no pswpin; else one page read, pswpin)."""
    si = get_swap_device(kernel, entry)
    assert si is not None
    data = si.data.get(swp_offset(entry))
    if data is None:
        return None
    kernel.count("pswpin")
    return bytearray(data)


async def swap_read_folio(kernel: Any, page: Page, entry: int) -> None:
    """swap_read_folio(): read slot ``entry`` into ``page`` (locked, in the
    swap cache) — slow I/O, the major fault's wait (a zero-filled slot is
    not read: swap_read_data)."""
    si = get_swap_device(kernel, entry)
    assert si is not None
    if swp_offset(entry) in si.data:
        await Work("swap_read")
    page.data = swap_read_data(kernel, entry)
