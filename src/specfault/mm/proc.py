"""What /proc shows of an mm (fs/proc/task_mmu.c): maps, pagemap, smaps
(with VmFlags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specfault.mm.huge_memory import smaps_anon_huge
from specfault.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from specfault.mm.pgtable import (
    MAX_SWAPFILES_SHIFT,
    PMD_LEVEL,
    PTE_LEVEL,
    huge_subpage_pte,
    is_swap_pte,
    non_swap_entry,
    pmd_trans_huge,
    pte_pfn,
    pte_present,
    pte_soft_dirty,
    pte_special,
    pte_swp_soft_dirty,
    pte_to_swp_entry,
    swp_offset,
    swp_offset_pfn,
    swp_type,
    walk,
    walk_range,
)
from specfault.mm.vma import VM_EXEC, VM_MAYSHARE, VM_READ, VM_SOFTDIRTY, VM_WRITE
from specfault.runtime import load_item

PM_PFRAME_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63


def vma_is_initial_stack(mm: Any, vma: Any) -> bool:
    """The stack exec set up: the VMA holding ``mm->start_stack``."""
    return bool(vma.vm_start <= mm.start_stack <= vma.vm_end)


def vma_name(mm: Any, vma: Any) -> str:
    """get_vma_name(): the file, a special mapping's name, [heap], [stack]."""
    if vma.vm_file is not None:
        return str(vma.vm_file.inode.path)
    if vma.vm_special is not None:
        return str(vma.vm_special)
    if vma.vm_start <= mm.brk and vma.vm_end >= mm.start_brk:
        return "[heap]"
    if vma_is_initial_stack(mm, vma):
        return "[stack]"
    return ""


def show_map_vma(mm: Any, vma: Any) -> str:
    flags = vma.vm_flags
    perms = ("r" if flags & VM_READ else "-") + ("w" if flags & VM_WRITE else "-") \
        + ("x" if flags & VM_EXEC else "-") + ("s" if flags & VM_MAYSHARE else "p")
    if vma.vm_file is not None:
        inode = vma.vm_file.inode
        pgoff = vma.vm_pgoff << 12
        major, minor = inode.dev
        ino = inode.ino
    else:
        pgoff, major, minor, ino = 0, 0, 0, 0
    line = f"{vma.vm_start:08x}-{vma.vm_end:08x} {perms} {pgoff:08x} {major:02x}:{minor:02x} {ino} "
    name = vma_name(mm, vma)
    if name:
        line = line.ljust(72) + " " + name
    return line


def maps(mm: Any) -> str:
    """/proc/PID/maps, one line per VMA, each ending in a newline."""
    return "".join(show_map_vma(mm, v) + "\n" for v in mm.vmas())


@dataclass(frozen=True)
class PagemapEntry:
    """One 64-bit /proc/PID/pagemap entry, decoded."""

    raw: int

    @property
    def present(self) -> bool:
        return bool(self.raw & PM_PRESENT)

    @property
    def swapped(self) -> bool:
        return bool(self.raw & PM_SWAP)

    @property
    def file_shared(self) -> bool:
        """Bit 61: a file page or a shared anonymous page."""
        return bool(self.raw & PM_FILE)

    @property
    def exclusive(self) -> bool:
        """Bit 56: the page is mapped exactly once."""
        return bool(self.raw & PM_MMAP_EXCLUSIVE)

    @property
    def soft_dirty(self) -> bool:
        return bool(self.raw & PM_SOFT_DIRTY)

    @property
    def pfn(self) -> int:
        return self.raw & PM_PFRAME_MASK if self.present else 0

    @property
    def swap_type(self) -> int:
        """Bits 0-4 of a swapped entry: the swap device's type."""
        return self.raw & 0x1F if self.swapped else 0

    @property
    def swap_offset(self) -> int:
        """Bits 5-54 of a swapped entry: the slot on the device."""
        return (self.raw & PM_PFRAME_MASK) >> 5 if self.swapped else 0

    def __repr__(self) -> str:
        """The decoded bits, then the raw entry."""
        return (f"PagemapEntry(present={self.present}, pfn={self.pfn:#x}, exclusive={self.exclusive}, "
                f"file_shared={self.file_shared}, swapped={self.swapped}, soft_dirty={self.soft_dirty}, "
                f"raw={self.raw:#018x})")


async def pagemap_entry(mm: Any, addr: int) -> PagemapEntry:
    """pagemap_pmd_range/pte_to_pagemap_entry for one address, under
    mmap_lock (read) as pagemap_read() takes it."""
    await mmap_read_lock(mm)
    try:
        return await _pagemap_entry(mm, addr)
    finally:
        await mmap_read_unlock(mm)


async def _pagemap_entry(mm: Any, addr: int) -> PagemapEntry:
    vma = mm.vma_lookup(addr)
    flags = 0
    if vma is not None and vma.vm_flags & VM_SOFTDIRTY:
        flags |= PM_SOFT_DIRTY
    pt = await walk(mm, addr)
    pte = await load_item(pt, pt.entries, (addr >> 12) & 511) if pt.level == PTE_LEVEL else 0
    if pt.level == PMD_LEVEL:
        pmd = pt.entries[(addr >> 21) & 511]      # what stopped the walk (read by it)
        if pmd_trans_huge(pmd) and vma is not None and pte_present(pmd):
            # pagemap_pmd_range_thp(): the subpage's PFN; a THP page
            # exclusive when mapped once; the huge zero folio is not
            # anonymous, so PM_FILE (unlike the 4 KiB zero page)
            pfn = pte_pfn(huge_subpage_pte(pmd, addr))
            flags |= PM_PRESENT | pfn
            if pte_soft_dirty(pmd):
                flags |= PM_SOFT_DIRTY
            page = mm.kernel.mem.pages[pfn]
            if page.zero:
                flags |= PM_FILE
            elif page.mapcount == 1:
                flags |= PM_MMAP_EXCLUSIVE
            return PagemapEntry(flags)
    if vma is not None and is_swap_pte(pte):
        # pte_to_pagemap_entry(): swap type and offset in the frame bits
        # (shown to CAP_SYS_ADMIN, as the PFNs are), PM_SWAP
        entry = pte_to_swp_entry(pte)
        if pte_swp_soft_dirty(pte):
            flags |= PM_SOFT_DIRTY
        return PagemapEntry(flags | PM_SWAP | swp_type(entry)
                            | (swp_offset(entry) << MAX_SWAPFILES_SHIFT))
    if vma is None or not pte_present(pte):
        return PagemapEntry(flags)
    flags |= PM_PRESENT | pte_pfn(pte)
    if pte_soft_dirty(pte):
        flags |= PM_SOFT_DIRTY
    if not pte_special(pte):
        page = mm.kernel.mem.pages[pte_pfn(pte)]
        if not page.anon:
            flags |= PM_FILE
        if page.mapcount == 1:
            flags |= PM_MMAP_EXCLUSIVE
    return PagemapEntry(flags)


# show_smap_vma_flags(): two letters per VM_* bit, printed in bit order
# (x86-64; "sd" as with CONFIG_MEM_SOFT_DIRTY, which the model keeps)
VMFLAG_MNEMONICS = {
    0: "rd", 1: "wr", 2: "ex", 3: "sh", 4: "mr", 5: "mw", 6: "me", 7: "ms", 8: "gd", 9: "um",
    10: "pf", 12: "uw", 13: "lo", 14: "io", 15: "sr", 16: "rr", 17: "dc", 18: "de", 19: "lf",
    20: "ac", 21: "nr", 22: "ht", 23: "sf", 24: "ar", 25: "wf", 26: "dd", 27: "sd", 28: "mm",
    29: "hg", 30: "nh", 31: "mg", 40: "dp",
}


def vma_flags_mnemonics(vm_flags: int) -> list[str]:
    """The VmFlags line of smaps, as a list (unknown bits print "??")."""
    out = []
    bit = 0
    while vm_flags >> bit:
        if vm_flags >> bit & 1:
            out.append(VMFLAG_MNEMONICS.get(bit, "??"))
        bit += 1
    return out


async def smaps(mm: Any) -> list[dict[str, Any]]:
    """Per VMA: start, end, Size, Rss, Anonymous, AnonHugePages (the
    VMA's PMD-mapped THPs) and Swap (kB), and VmFlags
    (a list of mnemonics), as /proc/PID/smaps (smaps_pte_range over each
    VMA's PTE tables, under mmap_lock read).  Swap counts the VMA's swap
    PTEs (smaps_pte_entry: a page in the swap cache but mapped is Rss)."""
    out = []
    await mmap_read_lock(mm)
    for vma in mm.vmas():
        rss = anon = swap = 0
        rss, anon_huge = smaps_anon_huge(mm, vma)          # smaps_pmd_entry()
        anon = rss
        for pt, lo, hi in await walk_range(mm, vma.vm_start, vma.vm_end, huge=True):
            if pt.level != PTE_LEVEL:
                continue
            for i in range((lo >> 12) & 511, ((hi - 1) >> 12 & 511) + 1):
                pte = await load_item(pt, pt.entries, i)
                if is_swap_pte(pte) and non_swap_entry(pte_to_swp_entry(pte)):
                    # smaps_pte_entry(): a migration entry is its page's
                    rss += 4
                    if mm.kernel.mem.pages[swp_offset_pfn(pte_to_swp_entry(pte))].anon:
                        anon += 4
                    continue
                if is_swap_pte(pte):
                    swap += 4
                    continue
                if not pte_present(pte) or pte_special(pte):
                    continue
                rss += 4
                if mm.kernel.mem.pages[pte_pfn(pte)].anon:
                    anon += 4
        out.append({"start": vma.vm_start, "end": vma.vm_end,
                    "Size": (vma.vm_end - vma.vm_start) >> 10, "Rss": rss, "Anonymous": anon,
                    "AnonHugePages": anon_huge, "Swap": swap,
                    "VmFlags": vma_flags_mnemonics(vma.vm_flags)})
    await mmap_read_unlock(mm)
    return out
