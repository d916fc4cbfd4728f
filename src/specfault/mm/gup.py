"""get_user_pages and pin_user_pages (mm/gup.c), and populating mappings
(__mm_populate, for MAP_POPULATE and MAP_LOCKED).

GUP gives the kernel — a driver, O_DIRECT, vmsplice, io_uring — the
struct pages behind a user buffer.  Two kinds of reference:

* FOLL_GET (get_user_pages, vmsplice): one ordinary reference per page;
* FOLL_PIN (pin_user_pages: O_DIRECT, RDMA, io_uring buffers): a pin,
  counted as GUP_PIN_COUNTING_BIAS on the refcount so that
  ``folio_maybe_dma_pinned`` can tell the page is under DMA; FOLL_LONGTERM
  marks a pin held indefinitely (an RDMA or io_uring registration).  The
  zero page is never pinned (Linux 6.5+): no count is taken for it.

The rules a pin forces (Linux 5.19+, David Hildenbrand's
PageAnonExclusive series, 6c287605fd56 "mm: remember exclusively mapped
anonymous pages with PG_anon_exclusive"; the knob ``cow_reuse`` selects
the earlier ones):

1. a pinned anonymous page is exclusive to the pinner: a read-only FOLL_PIN
   of a page that is not PageAnonExclusive first unshares it
   (``gup_must_unshare`` → FAULT_FLAG_UNSHARE → do_wp_page: reuse it if
   ours alone, else copy; a7f226604170 "mm/gup: trigger FAULT_FLAG_UNSHARE
   when R/O-pinning a possibly shared anonymous page"), and a long-term one
   also unshares the zero page and page-cache pages of a private mapping
   (84209e87c696 "mm/gup: reliable R/O long-term pinning in COW mappings");
   a write pin breaks COW with a write fault;
2. a write fault reuses a page that is not exclusive only if it holds the
   one reference (memory.py ``wp_can_reuse_anon_folio``): a page someone
   pinned or got is copied, not handed to another writer;
3. fork copies a possibly pinned exclusive page for the child at once
   (fork.py ``copy_present_page``; 70e806e4e645 "mm: Do early cow for
   pinned pages during fork() for ptes", 5.9) instead of sharing it, so the
   pinner's next write does not copy its page away from the pin;
4. reclaim does not unmap a possibly pinned exclusive page
   (rmap.py try_to_unmap: folio_try_share_anon_rmap_pte fails).

Together: a pin by mm A sees exactly what A maps at the pinned address
while A maps it (coherence), and nobody else's writes (isolation) — the
properties the checker holds every pin to (check/properties.py).  Before
5.8 (``cow_reuse=mapcount``) rule 2 looked at the mapcount: a child that
vmspliced a COW-shared page and unmapped it read its parent's later
writes through the pipe (CVE-2020-29374); between 5.9 and 5.18
(``page_count``) a read-only pin of a shared page was not unshared, and
the pinner's next write copied its page away from the pin.

Locks: GUP runs under ``mmap_lock`` held for read (never speculative, never
under a VMA lock alone: handle_mm_fault is entered classically) and takes
each reference under the PTL of the PTE that maps the page — the lock fork
(copy_present_pte) and reclaim (try_to_unmap) hold when they test
``folio_maybe_dma_pinned``.  Releasing a pin takes no lock.
"""

from __future__ import annotations

import errno
from typing import Any

from specfault.mm.fault_flags import (
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    VM_FAULT_OOM,
)
from specfault.mm.huge_memory import huge_pmd_table, split_huge_pmd_address
from specfault.mm.memory import handle_mm_fault, vm_normal_page
from specfault.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from specfault.mm.page import GUP_PIN_COUNTING_BIAS, Page
from specfault.mm.pgtable import (
    PTE_LEVEL,
    follow_pte,
    pte_present,
    pte_special,
    pte_write,
    walk,
)
from specfault.mm.vma import VM_EXEC, VM_IO, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE
from specfault.runtime import ModelBug, Op, load_item

# include/linux/mm_types.h (the FOLL_* a caller passes) and mm/internal.h
# (FOLL_PIN, set by the pin_user_pages* entries only; its value here is
# the model's)
FOLL_WRITE = 1 << 0
FOLL_GET = 1 << 1
FOLL_LONGTERM = 1 << 8
FOLL_PIN = 1 << 16

_UNSHARE = object()          # follow_page_pte's -EMLINK: unshare, then retry


class GupPages:
    """What a GUP caller holds: the pages of ``[start, start + length)``
    of ``mm``, each with one FOLL_GET reference or one FOLL_PIN pin, until
    :func:`unpin_user_pages` (or put_page for FOLL_GET) releases them.

    Fields — owned by the caller (no lock; the pages' refcounts are atomic)
        mm, start (the user address), length, gup_flags
        pages     the Page behind each page of the range, in order
        released  True once the references were dropped
    Live handles are listed in ``kernel.gup_pins`` (for the checker's
    accounting: check/invariants.py, check/properties.py).
    """

    __slots__ = ("mm", "start", "length", "gup_flags", "pages", "released")

    def __init__(self, mm: Any, start: int, length: int, gup_flags: int,
                 pages: list[Page]) -> None:
        self.mm = mm
        self.start = start
        self.length = length
        self.gup_flags = gup_flags
        self.pages = pages
        self.released = False

    def refs(self, page: Page) -> int:
        """The refcount this handle holds on ``page`` (one of its pages)."""
        if page.zero:
            return 0
        return GUP_PIN_COUNTING_BIAS if self.gup_flags & FOLL_PIN else 1

    def coherent(self) -> bool:
        """Does Linux promise this pin sees what its mm maps (rule 1)?
        A write pin or a long-term pin; a short-term read-only pin may see
        a page the process has since replaced (the zero page, a file page
        of a private mapping)."""
        return bool(self.gup_flags & FOLL_PIN and self.gup_flags & (FOLL_WRITE | FOLL_LONGTERM))

    def __repr__(self) -> str:
        kind = "pin" if self.gup_flags & FOLL_PIN else "get"
        return f"<GupPages {kind} {self.start:#x}+{self.length:#x} of {self.mm.label()}>"


class TryGrabFolio(Op):
    """try_grab_folio(): take the GUP reference on ``page`` — one ordinary
    reference (FOLL_GET) or a pin (FOLL_PIN: GUP_PIN_COUNTING_BIAS, none on
    the zero page), counted in nr_foll_pin_acquired."""

    __slots__ = ("page", "gup_flags", "vmstat")
    kind = "get_page"

    def __init__(self, page: Page, gup_flags: int, vmstat: dict[str, int]) -> None:
        self.page = page
        self.gup_flags = gup_flags
        self.vmstat = vmstat

    def perform(self) -> None:
        page = self.page
        if page.freed:
            raise ModelBug(f"try_grab_folio on freed {page!r}")
        if page.zero:
            return
        if self.gup_flags & FOLL_PIN:
            page.refcount += GUP_PIN_COUNTING_BIAS
            self.vmstat["nr_foll_pin_acquired"] = self.vmstat.get("nr_foll_pin_acquired", 0) + 1
        else:
            page.refcount += 1

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.page, "refcount", "w"),)

    def describe(self) -> str:
        return f"try_grab_folio {self.page.pfn:#x}"


class GupPutFolio(Op):
    """gup_put_folio(): drop what :class:`TryGrabFolio` took (FOLL_PIN:
    the bias, counted in nr_foll_pin_released); the last reference frees
    the page."""

    __slots__ = ("mem", "page", "gup_flags")
    kind = "put_page"

    def __init__(self, mem: Any, page: Page, gup_flags: int) -> None:
        self.mem = mem
        self.page = page
        self.gup_flags = gup_flags

    def perform(self) -> None:
        page, mem = self.page, self.mem
        if page.zero:
            return
        if self.gup_flags & FOLL_PIN:
            if page.refcount < GUP_PIN_COUNTING_BIAS:
                raise ModelBug(f"unpin_user_page: {page!r} is not pinned")
            mem.vmstat["nr_foll_pin_released"] = mem.vmstat.get("nr_foll_pin_released", 0) + 1
            page.refcount -= GUP_PIN_COUNTING_BIAS - 1
        mem.put_page(page)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        page = self.page
        return ((page, "refcount", "w"), (page, "data", "w"), (self.mem, "free", "w"))

    def describe(self) -> str:
        return f"unpin {self.page.pfn:#x}"


class DmaAccess(Op):
    """The device (or the kernel on its behalf: a pipe read, a bio) reading
    or writing a pinned page's bytes directly, not through any page table.
    A write dirties the page (the driver's set_page_dirty_lock at unpin)
    and is reported to the checker's recorder like a store."""

    __slots__ = ("kernel", "page", "off", "n", "data")
    kind = "dma"

    def __init__(self, kernel: Any, page: Page, off: int, n: int, data: bytes | None) -> None:
        self.kernel = kernel
        self.page = page
        self.off = off
        self.n = n
        self.data = data

    def perform(self) -> bytes:
        page = self.page
        if self.data is None:
            return page.read(self.off, self.n)
        if page.zero:
            raise ModelBug("DMA write into the zero page (a read-only pin)")
        page.write(self.off, self.data)
        page.dirty = True
        obs = self.kernel.observer
        if obs is not None:
            obs.dma_store(page, self.off, self.data)
        return b""

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.page, "data", "r" if self.data is None else "w"),)

    def describe(self) -> str:
        return f"dma {'read' if self.data is None else 'write'} {self.page.pfn:#x}+{self.off:#x}"


# ------------------------------------------------------------- the rules
def gup_must_unshare(vma: Any, gup_flags: int, page: Page) -> bool:
    """gup_must_unshare() (mm/internal.h): must a read-only FOLL_PIN of
    ``page``, mapped read-only in ``vma``, first make it exclusive?  An
    anonymous page that is not PageAnonExclusive: yes (someone else may
    map it).  Any other page (the zero page, a file page): only for a
    long-term pin in a private writable ("COW") mapping, where a later
    write would replace it.  Never for writes (FOLL_WRITE faults for
    write first) or FOLL_GET.  Knob cow_reuse: only Linux 5.19+
    (anon_exclusive) unshares."""
    if vma.vm_mm.config.knob("cow_reuse") != "anon_exclusive":
        return False
    if gup_flags & (FOLL_WRITE | FOLL_PIN) != FOLL_PIN:
        return False
    if not page.anon:
        if not gup_flags & FOLL_LONGTERM:
            return False
        return bool(vma.is_cow_mapping())
    return not page.anon_exclusive


def check_vma_flags(vma: Any, gup_flags: int) -> int:
    """check_vma_flags(): 0, or -EFAULT when GUP may not take pages of
    ``vma`` (I/O and PFN mappings; a write to a read-only mapping; a read
    of an unreadable one — FOLL_FORCE, ptrace's override, is not
    modelled)."""
    vm_flags = vma.vm_flags
    if vm_flags & (VM_IO | VM_PFNMAP):
        return -errno.EFAULT
    if gup_flags & FOLL_WRITE:
        if not vm_flags & VM_WRITE:
            return -errno.EFAULT
    elif not vm_flags & VM_READ:
        return -errno.EFAULT
    return 0


async def follow_page_pte(vma: Any, address: int, gup_flags: int) -> Any:
    """follow_page_pte(): the page mapped at ``address`` with the GUP
    reference taken (under the PTL), None when a fault must map it first
    (not present; FOLL_WRITE and not writable), or ``_UNSHARE``
    (gup_must_unshare).  Entered and left with mmap_lock held for read and
    no PTL."""
    mm = vma.vm_mm
    if huge_pmd_table(mm, address) is not None:
        # follow_huge_pmd(): Linux takes the reference on the THP's subpage
        # through the huge PMD; the model splits the PMD first (a known
        # difference, docs/fidelity.md: the pin then holds an order-0
        # page, so fork's copy_present_page and collapse's refcount check
        # see it as Linux's PTE-mapped case)
        await split_huge_pmd_address(vma, address)
    pt = await walk(mm, address)
    if pt.level != PTE_LEVEL:
        return None
    await pt.ptl.lock()
    try:
        pte = await load_item(pt, pt.entries, (address >> 12) & 511)
        if not pte_present(pte):
            return None
        if gup_flags & FOLL_WRITE and not pte_write(pte):
            return None                           # can_follow_write_pte()
        page = vm_normal_page(mm, pte)
        if page is None:
            if not pte_special(pte):
                return None
            page = mm.kernel.mem.zero_page
        if not pte_write(pte) and gup_must_unshare(vma, gup_flags, page):
            return _UNSHARE
        await TryGrabFolio(page, gup_flags, mm.kernel.vmstat)
        return page
    finally:
        await pt.ptl.unlock()


async def __get_user_pages(mm: Any, start: int, nr_pages: int, gup_flags: int,
                           pages: list[Page]) -> int:
    """__get_user_pages(): for each page from ``start``, follow it (the
    reference taken) or fault it in — a write fault for FOLL_WRITE, an
    unsharing one when gup_must_unshare — and follow again.  Appends to
    ``pages``; returns 0, or -errno for the first page it cannot take
    (those before it stay taken: the caller decides).  Caller holds
    mmap_lock for read; faults run classically under it."""
    addr = start
    for _ in range(nr_pages):
        vma = mm.vma_lookup(addr)
        if vma is None:
            return -errno.EFAULT
        err = check_vma_flags(vma, gup_flags)
        if err:
            return err
        while True:
            page = await follow_page_pte(vma, addr, gup_flags)
            if isinstance(page, Page):
                pages.append(page)
                break
            flags = FAULT_FLAG_WRITE if gup_flags & FOLL_WRITE else 0
            if page is _UNSHARE:
                flags |= FAULT_FLAG_UNSHARE
            ret = await handle_mm_fault(vma, addr, flags)        # faultin_page()
            if ret & VM_FAULT_OOM:
                return -errno.ENOMEM
            if ret & VM_FAULT_ERROR:
                return -errno.EFAULT
        addr += 4096
    return 0


async def __gup_longterm_locked(mm: Any, start: int, length: int, gup_flags: int) -> Any:
    """get_user_pages_remote / pin_user_pages_remote's common body: take
    mmap_lock for read, get the pages, drop it.  Returns a
    :class:`GupPages` for the whole range, or -errno (nothing kept: a
    short range is released, as io_uring and most callers do)."""
    kernel = mm.kernel
    first = start & ~0xFFF
    nr_pages = (start + length - first + 4095) >> 12
    pages: list[Page] = []
    await mmap_read_lock(mm)
    try:
        err = await __get_user_pages(mm, first, nr_pages, gup_flags, pages)
    finally:
        await mmap_read_unlock(mm)
    handle = GupPages(mm, start, length, gup_flags, pages)
    if err:
        await _put_pages(handle)
        return err
    kernel.gup_pins.append(handle)
    return handle


def pin_user_pages(mm: Any, start: int, length: int, write: bool = False,
                   longterm: bool = False) -> Any:
    """``h = await pin_user_pages(mm, start, length, ...)``: FOLL_PIN
    (|FOLL_WRITE, |FOLL_LONGTERM) on every page of the range — what
    O_DIRECT, RDMA and io_uring do.  A :class:`GupPages` or -errno."""
    flags = FOLL_PIN | (FOLL_WRITE if write else 0) | (FOLL_LONGTERM if longterm else 0)
    return __gup_longterm_locked(mm, start, length, flags)


def get_user_pages(mm: Any, start: int, length: int, write: bool = False) -> Any:
    """``h = await get_user_pages(mm, start, length)``: FOLL_GET on every
    page — what vmsplice does (iov_iter_get_pages).  A
    :class:`GupPages` or -errno."""
    return __gup_longterm_locked(mm, start, length, FOLL_GET | (FOLL_WRITE if write else 0))


async def _put_pages(handle: GupPages) -> None:
    mem = handle.mm.kernel.mem
    for page in handle.pages:
        await GupPutFolio(mem, page, handle.gup_flags)
    handle.released = True


async def unpin_user_pages(handle: GupPages) -> None:
    """unpin_user_pages() (FOLL_PIN) or put_page on each (FOLL_GET): the
    references go; a page nobody maps any more is freed.  No lock."""
    if handle.released:
        raise ModelBug(f"{handle!r} released twice")
    await _put_pages(handle)
    pins = handle.mm.kernel.gup_pins
    if handle in pins:
        pins.remove(handle)


async def gup_dma(handle: GupPages, offset: int, n: int = 0, data: bytes | None = None) -> bytes:
    """The device's access to the buffer: read ``n`` bytes, or write
    ``data``, at ``offset`` from ``handle.start`` — through the pages held,
    whatever the process maps there now.  Caller keeps within the range."""
    if handle.released:
        raise ModelBug(f"DMA through {handle!r} after it was released")
    kernel = handle.mm.kernel
    first = handle.start & ~0xFFF
    addr = handle.start + offset
    out = bytearray()
    size = n if data is None else len(data)
    done = 0
    while done < size:
        page = handle.pages[(addr + done - first) >> 12]
        off = (addr + done) & 0xFFF
        take = min(size - done, 4096 - off)
        chunk = None if data is None else bytes(data[done:done + take])
        out += await DmaAccess(kernel, page, off, take, chunk)
        done += take
    return bytes(out)


# ----------------------------------------------------------- populating
async def mm_populate(mm: Any, start: int, length: int) -> int:
    """__mm_populate(): fault in every page of the range as the access GUP
    would make — a write fault for private writable mappings (breaking COW
    up front), a read fault otherwise; no reference kept.  Takes and drops
    mmap_lock for read."""
    end = start + length
    await mmap_read_lock(mm)
    try:
        addr = start
        while addr < end:
            vma = mm.find_vma(addr)
            if vma is None or vma.vm_start >= end:
                break
            addr = max(addr, vma.vm_start)
            stop = min(end, vma.vm_end)
            if vma.vm_flags & (VM_IO | VM_PFNMAP) or not vma.vm_flags & (VM_READ | VM_WRITE | VM_EXEC):
                addr = stop
                continue
            write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
            while addr < stop:
                pte = await follow_pte(mm, addr)     # follow_page_pte()
                if not pte_present(pte) or (write and not pte_write(pte)):
                    ret = await handle_mm_fault(vma, addr, FAULT_FLAG_WRITE if write else 0)
                    if ret & VM_FAULT_ERROR:
                        return ret
                    continue
                addr += 4096
        return 0
    finally:
        await mmap_read_unlock(mm)
