"""Swap devices and their slots (mm/swapfile.c).

A machine has no swap unless configured (knob ``swap_pages``, the
``swapon`` of the model: one device, type 0, of that many page slots —
like the host, which runs with no swap; then anonymous pages are never
reclaimed: add_to_swap() fails and the page stays).

Each slot's ``swap_map`` byte is Linux's: the number of swap PTEs (and
other references: fork's copies) pointing at it, plus ``SWAP_HAS_CACHE``
while a folio for it is in the swap cache (swap_state.py).  A slot is
free when its byte is 0.  Offset 0 holds the swap header and is never
given out, as in Linux.  The device's contents are the bytes written by
``swap_writepage`` (``data``: offset -> the page's bytes; absent: zeroes).

Fields
------
SwapInfo (struct swap_info_struct)
# protected by si->lock (the model: op atomicity — every change is one
# step between two ops)
    swap_map     count per slot (| SWAP_HAS_CACHE)
    inuse_pages  slots with a non-zero swap_map
    cluster_next where the next slot search starts (a simple cursor)
    data         the device's contents (swap_writepage / swap_read_folio)
# immutable
    type, max (slots, offset 0 included), flags
"""

from __future__ import annotations

from typing import Any

from specfault.mm.pgtable import swp_entry, swp_offset, swp_type
from specfault.runtime import ModelBug

SWAP_HAS_CACHE = 0x40
SWAP_MAP_MAX = 0x3E
SWP_USED = 1 << 0
SWP_WRITEOK = 1 << 1


class SwapInfo:
    __slots__ = ("type", "max", "flags", "swap_map", "inuse_pages", "cluster_next", "data")

    def __init__(self, type_: int, pages: int) -> None:
        if pages < 2:
            raise ValueError("swapon: a swap device needs at least 2 pages (the header and a slot)")
        self.type = type_
        self.max = pages
        self.flags = SWP_USED | SWP_WRITEOK
        self.swap_map = bytearray(pages)
        self.inuse_pages = 0
        self.cluster_next = 1
        self.data: dict[int, bytes] = {}

    @property
    def pages(self) -> int:
        """Usable slots (the header excluded), as /proc/swaps counts."""
        return self.max - 1

    def label(self) -> str:
        return f"swap device {self.type}"

    def __repr__(self) -> str:
        return f"<SwapInfo {self.type} {self.inuse_pages}/{self.pages} used>"


def swapon(kernel: Any, pages: int) -> SwapInfo:
    """sys_swapon(): add a swap device of ``pages`` page slots (header
    included) as the next type."""
    si = SwapInfo(len(kernel.swap_info), pages)
    kernel.swap_info.append(si)
    return si


def get_swap_device(kernel: Any, entry: int) -> SwapInfo | None:
    """The device of ``entry``, or None if it names none (a bad entry)."""
    t = swp_type(entry)
    if t >= len(kernel.swap_info):
        return None
    si: SwapInfo = kernel.swap_info[t]
    if swp_offset(entry) >= si.max:
        return None
    return si


def nr_swap_pages(kernel: Any) -> int:
    """Free slots over every device (get_nr_swap_pages())."""
    return sum(si.pages - si.inuse_pages for si in kernel.swap_info if si.flags & SWP_WRITEOK)


def total_swap_pages(kernel: Any) -> int:
    return sum(si.pages for si in kernel.swap_info)


def vm_swap_full(kernel: Any) -> bool:
    """vm_swap_full(): more than half of swap in use — swap-in then frees
    the slot of a page it maps (should_try_to_free_swap)."""
    total = total_swap_pages(kernel)
    return total > 0 and nr_swap_pages(kernel) * 2 < total


def folio_alloc_swap(kernel: Any) -> int:
    """get_swap_pages() for one page: a free slot, its swap_map set to
    SWAP_HAS_CACHE (the caller adds the folio to the swap cache).  Returns
    the entry, or 0 when no device has a free slot (swap full, or none)."""
    for si in kernel.swap_info:
        if not si.flags & SWP_WRITEOK or si.inuse_pages >= si.pages:
            continue
        n = si.max
        off = si.cluster_next
        for _ in range(n):
            if off >= n:
                off = 1
            if si.swap_map[off] == 0:
                si.swap_map[off] = SWAP_HAS_CACHE
                si.inuse_pages += 1
                si.cluster_next = off + 1
                return swp_entry(si.type, off)
            off += 1
    kernel.count("swap_alloc_fail")
    return 0


def swap_count(kernel: Any, entry: int) -> int:
    """__swap_count(): the references to the slot, SWAP_HAS_CACHE aside."""
    si = get_swap_device(kernel, entry)
    return 0 if si is None else si.swap_map[swp_offset(entry)] & ~SWAP_HAS_CACHE


def _put(kernel: Any, si: SwapInfo, off: int, usage: int) -> int:
    """__swap_entry_free_locked(): drop ``usage`` (1: one reference;
    SWAP_HAS_CACHE: the cache's) from the slot; a slot left at 0 is free
    (its contents go: swap_range_free).  Returns the byte left."""
    have = si.swap_map[off]
    count, cache = have & ~SWAP_HAS_CACHE, have & SWAP_HAS_CACHE
    if usage == SWAP_HAS_CACHE:
        if not cache:
            raise ModelBug(f"swap entry {si.type}:{off:#x}: cache dropped twice")
        cache = 0
    else:
        if not count:
            raise ModelBug(f"swap entry {si.type}:{off:#x}: freed with no reference")
        count -= 1
    left = count | cache
    si.swap_map[off] = left
    if not left:
        si.inuse_pages -= 1
        si.data.pop(off, None)
        kernel.count("swap_slot_free")
    return left


def swap_free(kernel: Any, entry: int) -> None:
    """swap_free(): drop one reference (a swap PTE mapped back in)."""
    si = get_swap_device(kernel, entry)
    if si is None:
        raise ModelBug(f"swap_free: bad swap entry {entry:#x}")
    _put(kernel, si, swp_offset(entry), 1)


def put_swap_folio(kernel: Any, entry: int) -> None:
    """put_swap_folio(): the swap cache lets go of the slot."""
    si = get_swap_device(kernel, entry)
    if si is None:
        raise ModelBug(f"put_swap_folio: bad swap entry {entry:#x}")
    _put(kernel, si, swp_offset(entry), SWAP_HAS_CACHE)


def swap_duplicate(kernel: Any, entry: int) -> int:
    """swap_duplicate() / __swap_duplicate(entry, 1): one more reference to
    a slot in use (try_to_unmap installing a swap PTE, fork copying one).
    Returns 0, or -ENOENT for a free slot (the entry raced with its free)."""
    si = get_swap_device(kernel, entry)
    if si is None:
        raise ModelBug(f"swap_duplicate: bad swap entry {entry:#x}")
    off = swp_offset(entry)
    have = si.swap_map[off]
    if not have:
        return -2
    if (have & ~SWAP_HAS_CACHE) >= SWAP_MAP_MAX:
        raise ModelBug(f"swap_duplicate: count overflow on {entry:#x} (no continuation pages)")
    si.swap_map[off] = have + 1
    return 0


def swapcache_prepare(kernel: Any, entry: int) -> int:
    """swapcache_prepare(): claim the slot's SWAP_HAS_CACHE for a folio
    about to be read in.  0 on success; -EEXIST when another task holds it
    (its folio is being added, or is in the cache); -ENOENT when the slot
    is free (its last PTE was zapped meanwhile)."""
    si = get_swap_device(kernel, entry)
    if si is None:
        return -2
    off = swp_offset(entry)
    have = si.swap_map[off]
    if have & SWAP_HAS_CACHE:
        return -17
    if not have:
        return -2
    si.swap_map[off] = have | SWAP_HAS_CACHE
    return 0


def swap_used(kernel: Any) -> list[tuple[int, int]]:
    """(entry, swap_map byte) of every slot in use, for the invariants."""
    out = []
    for si in kernel.swap_info:
        for off in range(1, si.max):
            if si.swap_map[off]:
                out.append((swp_entry(si.type, off), si.swap_map[off]))
    return out
