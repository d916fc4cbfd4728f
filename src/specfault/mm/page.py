"""Physical memory: struct page, the zero page, and the page allocator.

Each allocation returns a fresh :class:`Page` object for a free PFN, so a
stale reference to a freed page is detectable (``freed`` is set) even though
its PFN is reused — as with the kernel's page poisoning.

Page contents are real bytes, materialised lazily: ``data`` holds the
page's first ``len(data)`` bytes and the rest are zeroes (``None``: all
zeroes) — a freshly zeroed page costs nothing until written, and a write
costs what it writes, not a 4 KiB buffer.

Fields
------
Page
# atomic (get_page/put_page; updated through ops where racing CPUs matter)
    refcount     references: one per mapping PTE, one for the page cache,
                 temporary ones (wp_page_copy holds one while copying)
    mapcount     number of PTEs mapping the page (rmap)
# protected by the PTL of the PTE that maps it / the page lock
    anon_exclusive  PageAnonExclusive: only one mm maps it, reuse is safe
    dirty
    lazyfree     an anonymous page MADV_FREE made lazily freeable (it lost
                 PG_swapbacked): reclaim (MADV_PAGEOUT) discards it while
                 it stays clean
# set once at allocation (by the allocating path, before the page is visible)
    pfn, anon, index (pgoff)
    mapping      AnonVma or Inode; a page-cache page's is cleared (None) when
                 truncation or hole punching removes it from the cache, under
                 the folio lock (filemap.py: the fault re-checks it under it)
# the swap cache (mm/swap_state.py): changed under the folio lock and the
# swap cache's lock (op atomicity in the model)
    swap         folio->swap: the swap entry of a page in the swap cache, else 0
    swapcache    PG_swapcache
# the folio lock (PG_locked): a sleeping lock, made when the folio first
# needs one (entering the swap or page cache, isolated for reclaim, locked
# by a fault) — before any other task can see it unlocked
    lock         RwSemaphore used as a mutex (folio_lock/folio_unlock), or None
# protected by the LRU lock (lruvec->lru_lock; op atomicity in the model)
    lru          which LRU list holds the page (LRU_* index), or None
    active       PG_active
    referenced   PG_referenced
# transparent huge pages (mm/huge_memory.py): set at allocation of a THP,
# changed under the PMD lock of the PMD that maps it
    compound_head  the head page of the 2 MiB folio this page belongs to
                 (itself for the head), or None for an order-0 page; each of
                 the 512 pages keeps its own refcount and mapcount (one per
                 PMD or PTE mapping it), where Linux keeps one folio count
    entire_mapcount  (head only) the PMDs mapping the folio whole; when it
                 drops to 0 the folio is split into 512 order-0 pages
# protected by the data access path (copy/zero/user access)
    data
PhysMem (the page allocator)
# protected by the zone lock (op atomicity: AllocPage / PutPage are one op)
    free_pfns, pages (pfn -> Page of every allocated frame), vmstat counts
# protected by the LRU lock (op atomicity in the model)
    lru          the node's lruvec: four lists (LRU_INACTIVE_ANON ...
                 LRU_ACTIVE_FILE), each pfn -> Page, oldest first
# set at boot (knob watermark_min), then read-only
    watermark    {"min", "low", "high"} free pages (0: no watermarks)
# immutable
    nr_frames, zero_page, alloc_op (the shared AllocPage op)
# set once, on first use (get_huge_zero_page, under op atomicity)
    huge_zero_pfn  first PFN of the huge zero folio (512 reserved frames
                 below FIRST_PFN, never freed), or 0 before its first use
"""

from __future__ import annotations

from typing import Any

from specfault.constants import PAGE_SIZE
from specfault.runtime import ModelBug, Op, Work
from specfault.runtime.ops import UNDECLARED_WRITES
from specfault.sync.rwsem import RwSemaphore


class Page:
    __slots__ = ("pfn", "refcount", "mapcount", "anon", "anon_exclusive", "mapping", "index",
                 "data", "dirty", "lazyfree", "freed", "zero", "swap", "swapcache", "lock", "lru",
                 "active", "referenced", "compound_head", "entire_mapcount")

    def __init__(self, pfn: int) -> None:
        self.pfn = pfn
        self.refcount = 1
        self.mapcount = 0
        self.anon = False
        self.anon_exclusive = False
        self.mapping: Any = None
        self.index = 0
        self.data: bytearray | None = None
        self.dirty = False
        self.lazyfree = False
        self.freed = False
        self.zero = False
        self.swap = 0
        self.swapcache = False
        self.lock: Any = None
        self.lru: int | None = None
        self.active = False
        self.referenced = False
        self.compound_head: Page | None = None
        self.entire_mapcount = 0

    # -- contents --
    def read(self, off: int, n: int) -> bytes:
        if self.freed:
            raise ModelBug(f"read of freed page pfn {self.pfn:#x}")
        if self.data is None:
            return bytes(n)
        got = bytes(self.data[off:off + n])
        return got if len(got) == n else got + bytes(n - len(got))   # zeroes past len(data)

    def write(self, off: int, data: bytes) -> None:
        if self.freed:
            raise ModelBug(f"write to freed page pfn {self.pfn:#x}")
        if self.zero:
            raise ModelBug("write to the zero page")
        if not data:
            return      # an empty store changes nothing (the simulator's touches)
        end = off + len(data)
        if end > PAGE_SIZE:
            raise ModelBug(f"write past the end of page pfn {self.pfn:#x}")
        buf = self.data
        if buf is None:
            self.data = buf = bytearray(end)          # bytes past ``end``: zeroes
        elif len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        buf[off:end] = data

    def copy_from(self, src: Page) -> None:
        """copy_user_highpage(): contents of ``src`` into this page."""
        if src.freed:
            raise ModelBug(f"copy from freed page pfn {src.pfn:#x}")
        self.data = None if src.data is None else bytearray(src.data)

    def label(self) -> str:
        return f"page {self.pfn:#x}"

    def __repr__(self) -> str:
        kind = "zero" if self.zero else "anon" if self.anon else "file" if self.mapping else "page"
        return f"<Page {self.pfn:#x} {kind} ref={self.refcount} map={self.mapcount}>"


class PhysMem:
    """The page allocator: ``nr_frames`` frames, a free list, vmstat counts.

    ``alloc()`` returns None when no frame is free: callers turn that into
    VM_FAULT_OOM / ENOMEM, with nothing half-done.
    """

    FIRST_PFN = 0x1000  # PFNs below this are "reserved" (the zero page lives there)

    def __init__(self, nr_frames: int, vmstat: dict[str, int]) -> None:
        if nr_frames < 1:
            raise ValueError("nr_frames must be at least 1")
        self.nr_frames = nr_frames
        self.free_pfns = list(range(self.FIRST_PFN + nr_frames - 1, self.FIRST_PFN - 1, -1))
        self.pages: dict[int, Page] = {}
        self.vmstat = vmstat
        zero = Page(0x100)
        zero.zero = True
        zero.refcount = 1 << 30  # never freed
        self.zero_page = zero
        self.pages[zero.pfn] = zero
        self.alloc_op = AllocPage(self)   # carries no per-call state: built once
        self.lru: list[dict[int, Page]] = [{}, {}, {}, {}]
        self.kernel: Any = None           # set by Kernel (vmscan reaches the rmap through it)
        self.slowpath: Any = None         # vmscan.alloc_pages_slowpath, set by Kernel
        self.watermark = {"min": 0, "low": 0, "high": 0}
        self.huge_zero_pfn = 0

    HUGE_ZERO_PFN = 0x200   # the huge zero folio's frames: reserved, 512-aligned

    def get_huge_zero_page(self) -> int:
        """mm_get_huge_zero_folio(): the huge zero folio's first PFN, made
        on first use (thp_zero_page_alloc) — 512 reserved zero pages."""
        if not self.huge_zero_pfn:
            for i in range(512):
                zp = Page(self.HUGE_ZERO_PFN + i)
                zp.zero = True
                zp.refcount = 1 << 30
                self.pages[zp.pfn] = zp
            self.huge_zero_pfn = self.HUGE_ZERO_PFN
            self.vmstat["thp_zero_page_alloc"] = self.vmstat.get("thp_zero_page_alloc", 0) + 1
        return self.huge_zero_pfn

    def is_huge_zero_pfn(self, pfn: int) -> bool:
        return bool(self.huge_zero_pfn) and self.huge_zero_pfn <= pfn < self.huge_zero_pfn + 512

    def set_watermarks(self, wmin: int) -> None:
        """__setup_per_zone_wmarks(): min from the knob, low and high a
        quarter of it apart (at least one page) above it."""
        step = max(wmin // 4, 1) if wmin else 0
        self.watermark = {"min": wmin, "low": wmin + step, "high": wmin + 2 * step}

    def nr_free(self) -> int:
        return len(self.free_pfns)

    def alloc(self) -> Page | None:
        """A fresh page, or None; what :class:`AllocPage` does."""
        return self.alloc_op.perform()

    def take_pfn(self, pfn: int) -> Page:
        """A fresh Page for ``pfn``, just taken off the free list by the
        caller (the allocator's op, or compaction's free scanner)."""
        page = Page(pfn)
        self.pages[pfn] = page
        self.vmstat["pgalloc"] += 1
        return page

    def free(self, page: Page) -> None:
        if page.freed or page.zero:
            raise ModelBug(f"free_page: bad page {page!r}")
        if page.mapcount:
            raise ModelBug(f"free_page: {page!r} still mapped")
        if page.swapcache:
            raise ModelBug(f"free_page: {page!r} still in the swap cache")
        if page.lru is not None:
            del self.lru[page.lru][page.pfn]       # __folio_clear_lru_flags on free
            page.lru = None
        page.freed = True
        page.data = None
        # a write no footprint shows, unless the PutPage op frees it (it
        # declares the free): the frees done by code between ops
        # (tlb_finish_mmu's batch, reclaim, the page cache) — the
        # explorer's DPOR makes the step during which it happened dependent
        # on every step
        UNDECLARED_WRITES[0] += 1
        del self.pages[page.pfn]
        self.free_pfns.append(page.pfn)
        self.vmstat["pgfree"] += 1

    def put_page(self, page: Page) -> None:
        """Drop one reference; the last one frees the page."""
        if page.zero:
            return
        page.refcount -= 1
        if page.refcount == 0:
            self.free(page)
        elif page.refcount < 0:
            raise ModelBug(f"put_page: refcount underflow on {page!r}")

    def pfn_to_page(self, pfn: int) -> Page:
        return self.pages[pfn]


class AllocPage(Op):
    """alloc_page(GFP_HIGHUSER_MOVABLE): returns a Page or None.  The
    simulator charges it by memory pressure (direct reclaim below the
    watermark); the explorer may preempt here (allocation can sleep)."""

    __slots__ = ("mem",)
    kind = "alloc_page"

    def __init__(self, mem: PhysMem) -> None:
        self.mem = mem

    def perform(self) -> Page | None:
        mem = self.mem
        if not mem.free_pfns:
            mem.vmstat["pgalloc_fail"] = mem.vmstat.get("pgalloc_fail", 0) + 1
            return None
        return mem.take_pfn(mem.free_pfns.pop())

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.mem, "free", "w"),)

    def describe(self) -> str:
        return "alloc_page"


class GetPage(Op):
    """get_page(): take a reference (atomic)."""

    __slots__ = ("page",)
    kind = "get_page"

    def __init__(self, page: Page) -> None:
        self.page = page

    def perform(self) -> None:
        page = self.page
        if page.freed:
            raise ModelBug(f"get_page on freed {page!r}")
        if not page.zero:
            page.refcount += 1

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.page, "refcount", "w"),)

    def describe(self) -> str:
        return f"get_page {self.page.pfn:#x}"


class CopyPage(Work):
    """copy_user_highpage(): the CPU work of copying a page (charged as the
    ``copy_page`` kind of :class:`~specfault.runtime.Work`), and the copy
    itself, done in the same step.  Unlike plain work it touches shared
    state — the source page's bytes, which a user store on another CPU may
    be writing (through a TLB entry the kernel has not flushed yet) — so it
    declares them: the explorer's reductions must see that race."""

    __slots__ = ("dst", "src")

    def __init__(self, dst: Page, src: Page) -> None:
        super().__init__("copy_page")
        self.dst = dst
        self.src = src

    def perform(self) -> None:
        self.dst.copy_from(self.src)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.src, "data", "r"), (self.dst, "data", "w"))


class PutPage(Op):
    """put_page(): drop a reference; the last one frees the page."""

    __slots__ = ("mem", "page")
    kind = "put_page"

    def __init__(self, mem: PhysMem, page: Page) -> None:
        self.mem = mem
        self.page = page

    def perform(self) -> None:
        hidden = UNDECLARED_WRITES[0]
        self.mem.put_page(self.page)
        UNDECLARED_WRITES[0] = hidden       # the free, if any, is declared (footprint())

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        page = self.page
        if page.refcount == 1 and not page.zero:     # the last reference: frees the frame
            return ((page, "refcount", "w"), (page, "data", "w"), (self.mem, "free", "w"))
        return ((page, "refcount", "w"),)

    def describe(self) -> str:
        return f"put_page {self.page.pfn:#x}"


class AllocHugePage(AllocPage):
    """vma_alloc_anon_folio_pmd() / alloc_pages(GFP_TRANSHUGE, HPAGE_PMD_ORDER):
    512 free frames, contiguous and 512-aligned, as one 2 MiB folio (the
    head first) — or None when no such block is free (fragmentation) or
    taking it would bring free memory to the low watermark (no compaction
    and no reclaim for a THP: the caller falls back to order-0 pages).
    One op: the zone lock covers the whole block."""

    __slots__ = ()

    def perform(self) -> Page | None:
        mem = self.mem
        free = mem.free_pfns
        if len(free) - 512 <= mem.watermark["low"] or len(free) < 512:
            return None
        avail = set(free)
        first = mem.FIRST_PFN
        base = -1
        for b in range(first, first + mem.nr_frames - 511, 512):
            if all(p in avail for p in range(b, b + 512)):
                base = b
                break
        if base < 0:
            return None
        mem.free_pfns = [p for p in free if not base <= p < base + 512]
        head = Page(base)
        for i in range(512):
            page = head if i == 0 else Page(base + i)
            page.compound_head = head
            mem.pages[page.pfn] = page
        mem.vmstat["pgalloc"] += 512
        return head

    def describe(self) -> str:
        return "alloc_pages(HPAGE_PMD_ORDER)"


def rss_kind(page: Page) -> str:
    """The RSS counter (MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES) a
    mapping of ``page`` counts in."""
    if page.anon:
        return "anon"
    inode = page.mapping
    return "shmem" if inode is not None and inode.shmem else "file"


def folio_page(mem: PhysMem, head: Page, i: int) -> Page:
    """folio_page(): the ``i``-th page of the THP whose head is ``head``."""
    return mem.pages[head.pfn + i]


LRU_INACTIVE_ANON, LRU_ACTIVE_ANON, LRU_INACTIVE_FILE, LRU_ACTIVE_FILE = 0, 1, 2, 3
LRU_NAMES = ("inactive_anon", "active_anon", "inactive_file", "active_file")


# ------------------------------------------------------------ the folio lock
def folio_lock_of(page: Page) -> Any:
    """The folio's PG_locked as a sleeping lock, made on first use (by a
    task that owns the folio: freshly allocated, or isolated from the LRU
    with a reference held — nobody else can be locking it yet)."""
    lock = page.lock
    if lock is None:
        lock = page.lock = RwSemaphore(f"folio_lock@{page.pfn:#x}", "folio_lock")
    return lock  # type: ignore[no-any-return]


def folio_lock(page: Page) -> Any:
    """``await folio_lock(page)``: sleep until the folio is ours."""
    return folio_lock_of(page).down_write()


def folio_trylock(page: Page) -> Any:
    """``if await folio_trylock(page)``: take the folio lock if free."""
    return folio_lock_of(page).down_write_trylock()


def folio_unlock(page: Page) -> Any:
    """``await folio_unlock(page)``."""
    return folio_lock_of(page).up_write()


def folio_test_locked(page: Page) -> bool:
    lock = page.lock
    return lock is not None and (lock.writer is not None or bool(lock.waiters))




def folio_lru_list(page: Page) -> int:
    """folio_lru_list(): anon (swap-backed) or file, active or inactive.
    A lazily freeable page (MADV_FREE) lives on the file lists, as Linux's
    !swapbacked anonymous folios do."""
    file = not page.anon or page.lazyfree
    return (LRU_INACTIVE_FILE if file else LRU_INACTIVE_ANON) + (1 if page.active else 0)


def lru_add(mem: PhysMem, page: Page) -> None:
    """folio_add_lru() (with the per-CPU batch drained at once): a new
    anonymous or page-cache page joins the inactive list of its kind
    (anonymous pages too, since Linux 5.9)."""
    if page.lru is not None or page.zero:
        return
    page.active = False
    lru = folio_lru_list(page)
    mem.lru[lru][page.pfn] = page
    page.lru = lru


def lru_del(mem: PhysMem, page: Page) -> None:
    """folio_isolate_lru()'s list removal (the caller holds a reference)."""
    if page.lru is not None:
        del mem.lru[page.lru][page.pfn]
        page.lru = None


def lru_move(mem: PhysMem, page: Page, active: bool) -> None:
    """folio_activate() / folio_deactivate(): put the page at the young
    end of the active or inactive list of its kind."""
    lru_del(mem, page)
    page.active = active
    lru = folio_lru_list(page)
    mem.lru[lru][page.pfn] = page
    page.lru = lru


def alloc_page(mem: PhysMem) -> AllocPage:
    """``page = await alloc_page(mem)``: the one allocation entry of the
    model's faults (Linux: vma_alloc_folio / alloc_anon_folio) — a Page,
    or None when no frame is free (the caller returns VM_FAULT_OOM).  See
    :class:`AllocPage` (one per allocator, shared: it has no per-call
    state, like a lock's ops).  With watermarks set (knob watermark_min),
    an allocation at or below the low watermark takes the slow path
    (vmscan.alloc_pages_slowpath: wake kswapd; at or below min, direct
    reclaim first)."""
    low = mem.watermark["low"]
    if low and len(mem.free_pfns) <= low:
        return mem.slowpath(mem.kernel)
    return mem.alloc_op


def put_page(mem: PhysMem, page: Page) -> PutPage:
    """``await put_page(mem, page)``: :class:`PutPage`."""
    return PutPage(mem, page)


# ------------------------------------------------------------- DMA pins
#: include/linux/mm.h: a FOLL_PIN reference on a small folio adds this to
#: its refcount (large folios count pins in _pincount instead), so that
#: "maybe pinned" can be told from the refcount alone (mm/gup.py)
GUP_PIN_COUNTING_BIAS = 1 << 10


def folio_maybe_dma_pinned(page: Page) -> bool:
    """folio_maybe_dma_pinned(): the refcount carries at least one pin's
    bias — or 1024 ordinary references, a false positive Linux accepts
    (the callers then copy a page they could have shared).  Read under the
    PTL of a PTE mapping the page (fork, try_to_unmap): a new pin of an
    anonymous page needs that PTL too (mm/gup.py follow_page_pte)."""
    return not page.zero and page.refcount >= GUP_PIN_COUNTING_BIAS
