"""A small in-model filesystem and its page cache (mm/filemap.c, mm/shmem.c).

Files live in memory: an :class:`Inode` has a size and a page cache
(``pages``: index -> Page).  Pages the cache lacks are read from the
inode's backing bytes on a fault (a major fault).  ``create_file`` leaves
every page cached, as on a host right after the file was written.
Shared anonymous mappings are backed by an unnamed shmem inode
(``/dev/zero (deleted)``), whose holes are filled with zeroed pages.

Fields
------
Inode
# protected by the inode lock (i_rwsem, taken for write by truncation and
# hole punching; read()/write() are op-atomic in the model); read locklessly
# (i_size_read) by faults, which re-check it under the folio lock
    size, data (backing bytes of pages not cached)
    i_rwsem      the inode lock (inode_lock(): truncate.py)
# protected by the page-cache lock (xa_lock): insertions and removals;
# a page is removed only under its folio lock (filemap_remove_folio)
    pages
    swapped      shmem: index -> swap entry of a page written to swap (Linux
                 keeps these as value entries in i_pages; info->swapped is
                 their number): shmem_writeout puts one in place of the
                 page, shmem_swapin_folio the page back in its place
# protected by i_mmap_rwsem (write: the VMA writers, each also holding its
# mm's mmap_lock for write; read: unmap_mapping_range); the reclaim walkers
# read it locklessly under rcu_read_lock (mm/rmap.py: the lock rule)
    i_mmap    the VMAs mapping the inode (VmaIntervalTree)
    i_mmap_rwsem  the lock of i_mmap (mapping->i_mmap_rwsem)
# immutable
    ino, path, shmem, wants_writenotify
    thp_get_unmapped_area  the filesystem's f_op->get_unmapped_area is
                   thp_get_unmapped_area (ext4, xfs): mappings holding an
                   aligned 2 MiB of the file are placed 2 MiB-aligned.  The
                   model's own files behave as tmpfs files (False)
OpenFile (struct file)
# immutable
    inode, f_mode (FMODE_READ | FMODE_WRITE)
# atomic (fget/fput)
    f_count
Filesystem
# protected by the namespace lock (op atomicity in the model: create,
# truncate and fput run between ops, never across one)
    inodes (path -> Inode), shmem_inodes
"""

from __future__ import annotations

import itertools
from typing import Any

from specfault.constants import PAGE_SIZE
from specfault.mm.interval_tree import VmaIntervalTree
from specfault.mm.page import (
    Page,
    PutPage,
    alloc_page,
    folio_lock,
    folio_unlock,
    lru_add,
)
from specfault.runtime import Load, Op, Work
from specfault.sync.rwsem import RwSemaphore

FMODE_READ = 0x1
FMODE_WRITE = 0x2


class Inode:
    __slots__ = ("ino", "path", "size", "data", "pages", "swapped", "shmem", "wants_writenotify",
                 "dev", "thp_get_unmapped_area", "i_mmap", "i_mmap_rwsem", "i_rwsem")

    def __init__(self, ino: int, path: str, shmem: bool = False) -> None:
        self.ino = ino
        self.path = path
        self.size = 0
        self.data: dict[int, bytes] = {}     # backing store of uncached pages
        self.pages: dict[int, Page] = {}     # the page cache
        self.swapped: dict[int, int] = {}    # shmem: index -> swap entry
        self.shmem = shmem
        # regular files track dirty pages: shared writable PTEs start read-only
        self.wants_writenotify = not shmem
        self.dev = (0, 1) if shmem else (0, 0x2a)
        self.thp_get_unmapped_area = False
        self.i_mmap = VmaIntervalTree()
        self.i_mmap_rwsem = RwSemaphore(f"i_mmap_rwsem@{ino}", "i_mmap_rwsem")
        self.i_rwsem = RwSemaphore(f"i_rwsem@{ino}", "i_rwsem")

    def nr_pages(self) -> int:
        return (self.size + PAGE_SIZE - 1) // PAGE_SIZE

    def label(self) -> str:
        return f"inode {self.ino} {self.path}"

    def __repr__(self) -> str:
        return f"<Inode {self.ino} {self.path} size={self.size}>"


class OpenFile:
    """struct file: what an fd refers to.  ``f_count`` counts the fds and
    VMAs holding it; when the last one of a shmem file goes, its pages go."""

    __slots__ = ("inode", "f_mode", "f_count")

    def __init__(self, inode: Inode, f_mode: int) -> None:
        self.inode = inode
        self.f_mode = f_mode
        self.f_count = 1

    @property
    def wants_writenotify(self) -> bool:
        return self.inode.wants_writenotify

    def __repr__(self) -> str:
        return f"<file {self.inode.path}>"


class Filesystem:
    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.inodes: dict[str, Inode] = {}
        self.shmem_inodes: set[Inode] = set()
        self._ino = itertools.count(1000)

    def create(self, path: str, data: bytes = b"", tmpfs: bool = False) -> Inode:
        """Create (or replace) a file with ``data``, every page cached.
        ``tmpfs``: a file of a tmpfs (a shmem inode: no backing store; its
        pages go to swap, when there is swap, rather than being dropped)."""
        old = self.inodes.get(path)
        if old is not None:
            self.truncate(old, 0)
        inode = old or Inode(next(self._ino), path, shmem=tmpfs)
        self.inodes[path] = inode
        self.write(inode, 0, data)
        return inode

    def shmem_file(self, size: int) -> Inode:
        """shmem_zero_setup(): the unnamed inode behind MAP_SHARED|MAP_ANONYMOUS."""
        inode = Inode(next(self._ino), "/dev/zero (deleted)", shmem=True)
        inode.size = size
        self.shmem_inodes.add(inode)
        return inode

    def fput(self, file: OpenFile) -> None:
        """Drop a reference to ``file``; an unnamed shmem inode dies with its
        last user, and its pages are freed."""
        file.f_count -= 1
        if file.f_count == 0 and file.inode in self.shmem_inodes:
            self.truncate(file.inode, 0)
            self.shmem_inodes.discard(file.inode)

    # -- the read()/write() paths, through the page cache --
    def cached_page(self, inode: Inode, index: int, create: bool) -> Page | None:
        """Find or read in the page-cache page (sequential, not an op)."""
        page = inode.pages.get(index)
        if page is not None or not create:
            return page
        if index in inode.swapped:
            return shmem_swapin_folio(self.kernel, inode, index, fault=False)[0]
        page = self.kernel.mem.alloc()
        if page is None:
            return None
        _fill(inode, index, page, self.kernel.mem)
        return page

    def read(self, inode: Inode, off: int, n: int) -> bytes:
        out = bytearray()
        end = min(off + n, inode.size)
        while off < end:
            idx, po = divmod(off, PAGE_SIZE)
            take = min(PAGE_SIZE - po, end - off)
            page = inode.pages.get(idx)
            if page is None and idx in inode.swapped:      # shmem_get_folio(SGP_READ)
                page = shmem_swapin_folio(self.kernel, inode, idx, fault=False)[0]
            if page is not None:
                out += page.read(po, take)
            else:
                out += inode.data.get(idx, bytes(PAGE_SIZE))[po:po + take]
            off += take
        return bytes(out)

    def write(self, inode: Inode, off: int, data: bytes) -> int:
        """generic_perform_write(): into cached pages (allocating them).
        Returns bytes written, or -ENOMEM if no page could be allocated."""
        done = 0
        while done < len(data):
            idx, po = divmod(off + done, PAGE_SIZE)
            take = min(PAGE_SIZE - po, len(data) - done)
            page = self.cached_page(inode, idx, create=True)
            if page is None:
                if done:
                    break
                return -12
            page.write(po, data[done:done + take])
            page.dirty = True
            done += take
        inode.size = max(inode.size, off + done)
        return done

    def remove_mapping(self, inode: Inode, page: Page) -> None:
        """__remove_mapping() of a clean, unmapped page-cache page (reclaim):
        it leaves the cache; its contents stay on the backing store."""
        assert not page.dirty and not page.mapcount, "remove_mapping: dirty or mapped page"
        # a clean shmem page is an undirtied hole page (every write, a swap-in
        # and a partial zeroing dirty it): dropped, it reads back as zeroes
        assert not inode.shmem or not page.data or not any(page.data), \
            "remove_mapping: a clean shmem page holding data"
        if page.data is not None and not inode.shmem:
            inode.data[page.index] = bytes(page.data)
        del inode.pages[page.index]
        page.mapping = None
        self.kernel.mem.put_page(page)

    def truncate(self, inode: Inode, size: int) -> None:
        """Drop cached pages wholly beyond ``size`` at once, for files no
        one maps (a new file's old contents, the last fput of a shmem
        inode); a mapped file is truncated by truncate.do_truncate."""
        keep = (size + PAGE_SIZE - 1) // PAGE_SIZE
        for idx in [i for i in inode.pages if i >= keep]:
            page = inode.pages.pop(idx)
            assert not page.mapcount, f"Filesystem.truncate: {page!r} still mapped"
            page.mapping = None
            self.kernel.mem.put_page(page)
        for idx in [i for i in inode.data if i >= keep]:
            del inode.data[idx]
        for idx in [i for i in inode.swapped if i >= keep]:
            shmem_free_swap(self.kernel, inode, idx)
        if size % PAGE_SIZE and (size // PAGE_SIZE) in inode.swapped:
            shmem_swapin_folio(self.kernel, inode, size // PAGE_SIZE, fault=False)
        if size % PAGE_SIZE and (size // PAGE_SIZE) in inode.pages:
            page = inode.pages[size // PAGE_SIZE]
            po = size % PAGE_SIZE
            page.write(po, bytes(PAGE_SIZE - po))
        inode.size = size


# ---------------------------------------------------------------- shmem and swap
def shmem_writeout(kernel: Any, page: Page) -> bool:
    """shmem_writeout(), from reclaim: a dirty, unmapped shmem folio
    (locked by the caller) leaves the page cache for the swap cache — a
    swap slot (folio_alloc_swap: one reference for the file's swap entry,
    swap_shmem_alloc, plus the cache's), the entry put in the page's place
    in the file (shmem_delete_from_page_cache), the cache's reference on
    the folio passing to the swap cache.  The caller then writes it
    (swap_writepage).  False, the folio left as it was, when there is no
    free slot (no swap, or full: AOP_WRITEPAGE_ACTIVATE)."""
    from specfault.mm.swap_state import add_to_swap_cache
    from specfault.mm.swapfile import folio_alloc_swap, swap_duplicate

    inode = page.mapping
    assert inode is not None and inode.shmem and inode.pages.get(page.index) is page
    entry = folio_alloc_swap(kernel)
    if not entry:
        return False
    swap_duplicate(kernel, entry)                # swap_shmem_alloc(): the file's reference
    del inode.pages[page.index]
    inode.swapped[page.index] = entry
    page.mapping = None
    add_to_swap_cache(kernel, page, entry)
    page.refcount -= 1                           # the page cache's reference went to the swap cache
    page.dirty = True
    return True


def shmem_swapin_folio(kernel: Any, inode: Inode, index: int, fault: bool) -> tuple[Page | None, int]:
    """shmem_swapin_folio(): bring the swapped page ``index`` of a shmem
    file back into the page cache: the swap cache's folio if it is still
    there (a minor fault: the write-out of an async swap device leaves it
    there), else a new folio read from the slot (pswpin unless it was
    zero-filled: swap_read_data; with ``fault``,
    a major fault: pgmajfault — a read() counts none).  The folio leaves
    the swap cache and the slot is freed (swap_free of the file's
    reference, the cache's dropped), and it is dirty: the only copy.
    Returns the page-cache page (the cache's reference), or None when no
    page could be allocated, and VM_FAULT_MAJOR or 0.  One step (the model does not interleave
    shmem swap-in with the rest: no lock is held across it)."""
    from specfault.mm.fault_flags import VM_FAULT_MAJOR
    from specfault.mm.swap_state import __delete_from_swap_cache, swap_read_data
    from specfault.mm.swapfile import swap_free

    entry = inode.swapped[index]
    mem = kernel.mem
    major = 0
    page = kernel.swap_cache.get(entry)
    if page is not None:
        # out of the swap cache (its SWAP_HAS_CACHE given back); the swap
        # cache's reference on the folio becomes the page cache's
        __delete_from_swap_cache(kernel, page)
    else:
        page = mem.alloc()
        if page is None:
            return None, 0
        page.data = swap_read_data(kernel, entry)
        if fault:
            kernel.count("pgmajfault")
            major = VM_FAULT_MAJOR
        lru_add(mem, page)
    del inode.swapped[index]
    swap_free(kernel, entry)                     # the file's reference: the slot is free
    page.mapping = inode
    page.index = index
    page.anon = False
    page.dirty = True
    inode.pages[index] = page
    return page, major


def shmem_free_swap(kernel: Any, inode: Inode, index: int) -> None:
    """shmem_free_swap(): truncation or a hole punch removes a swap entry
    from the file — free_swap_and_cache(): the slot's reference, and the
    swap-cache folio too when nothing else holds it."""
    from specfault.mm.swap_state import free_swap_and_cache

    free_swap_and_cache(kernel, inode.swapped.pop(index))


def _fill(inode: Inode, index: int, page: Page, mem: Any) -> None:
    """Insert a freshly allocated page into the cache, contents from disk."""
    data = inode.data.pop(index, None)
    if data is not None:
        page.data = bytearray(data)
    page.mapping = inode
    page.index = index
    inode.pages[index] = page   # the cache holds the allocation's reference
    lru_add(mem, page)          # folio_add_lru(): the inactive file list


class FindGetPage(Op):
    """``page = await FindGetPage(inode, index)``: filemap_get_entry() — the
    page-cache page at ``index`` with a reference taken, or None.  One op:
    Linux's lookup under RCU with folio_try_get() and the re-check of the
    slot amounts to an atomic find-and-get (a page being freed is not
    found)."""

    __slots__ = ("inode", "index")
    kind = "find_get_page"

    def __init__(self, inode: Inode, index: int) -> None:
        self.inode = inode
        self.index = index

    def perform(self) -> Page | None:
        page = self.inode.pages.get(self.index)
        if page is not None:
            page.refcount += 1
        return page

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.inode, "pages", "r"),)

    def describe(self) -> str:
        return f"find_get_page {self.inode.path}[{self.index}]"


async def i_size_read(inode: Inode) -> int:
    """``i_size_read()``: READ_ONCE of the file's size (racing truncation)."""
    return await Load(inode, "size")  # type: ignore[no-any-return]


async def filemap_fault(kernel: Any, inode: Inode, index: int) -> tuple[int, Page | None]:
    """->fault (filemap_fault / shmem_fault): the page-cache page at
    ``index``, *locked*, with a reference taken for the caller, reading it
    in (or, for shmem, allocating a zeroed page) if it is not cached.
    Returns (VM_FAULT_* bits, page); a page comes back locked
    (VM_FAULT_LOCKED): the caller maps it under the folio lock and then
    unlocks it and drops the reference.  Against truncation and hole
    punching (truncate.py), in Linux's order:

    1. beyond i_size: VM_FAULT_SIGBUS;
    2. find the page in the cache, or allocate one and insert it (filled
       from the backing store);
    3. (the lookup took a reference: FindGetPage) lock it (folio_lock:
       sleeps while truncation holds it);
    4. ``folio->mapping`` re-checked: truncation or a hole punch removed it
       from the cache while we waited (it is no longer the file's page):
       unlock, put, look it up again (retry_find) — knob
       ``no_folio_mapping_recheck`` (mutant) maps the orphan instead;
    5. i_size re-checked under the folio lock: a truncation that set the
       size after step 1 may have swept the cache before we inserted a new
       page at step 2 — SIGBUS (shmem removes the page it inserted) —
       knob ``no_isize_recheck_after_lock`` (mutant) maps it beyond EOF.

    No mapping->invalidate_lock: the model's files are tmpfs files, and
    tmpfs takes it neither in shmem_fault nor in shmem_setattr /
    shmem_fallocate (ext4 takes it shared around reading a page in and
    exclusive around truncation; steps 4-5 are what tmpfs relies on).
    Entered with the fault's lock (mmap_lock read or the VMA lock), no PTL;
    takes and holds the folio lock (returned held with the page)."""
    from specfault.mm.fault_flags import VM_FAULT_MAJOR, VM_FAULT_OOM, VM_FAULT_SIGBUS

    config = kernel.config
    ret = 0
    while True:
        size = await i_size_read(inode)                                # 1.
        if index >= (size + PAGE_SIZE - 1) // PAGE_SIZE:
            return VM_FAULT_SIGBUS, None
        created = False
        page = await FindGetPage(inode, index)                         # 2., 3.
        if page is None and index in inode.swapped:
            # shmem_get_folio_gfp(): a swap entry in the file — swap it in
            # (a major fault if it had to be read from the device)
            page, major = shmem_swapin_folio(kernel, inode, index, fault=True)
            if page is None:
                return VM_FAULT_OOM, None
            ret |= major
            page.refcount += 1                                         # the lookup's reference
        if page is None:
            page = await alloc_page(kernel.mem)
            if page is None:
                return VM_FAULT_OOM, None
            # filemap_add_folio() of a new folio: locked before it is
            # visible, our reference and the cache's; read in under the lock
            await folio_lock(page)
            if index in inode.pages:  # raced with another filler meanwhile
                await folio_unlock(page)
                kernel.mem.put_page(page)
                continue
            else:
                page.refcount += 1
                _fill(inode, index, page, kernel.mem)
                created = True
                if not inode.shmem:
                    await Work("read_page")
                    ret |= VM_FAULT_MAJOR
                    kernel.count("pgmajfault")
        assert page is not None
        if not created:
            await folio_lock(page)                                     # 3.
        if page.mapping is not inode and not config.knob("no_folio_mapping_recheck"):   # 4.
            await folio_unlock(page)
            await PutPage(kernel.mem, page)
            kernel.count("filemap_fault_retry_truncated")
            continue
        size = await i_size_read(inode)                                # 5.
        if index >= (size + PAGE_SIZE - 1) // PAGE_SIZE \
                and not config.knob("no_isize_recheck_after_lock"):
            if created and page.mapping is inode:
                filemap_remove_folio(kernel, inode, page)     # shmem: drop what we added
            await folio_unlock(page)
            await PutPage(kernel.mem, page)
            return VM_FAULT_SIGBUS, None
        return ret, page


def filemap_remove_folio(kernel: Any, inode: Inode, page: Page) -> None:
    """filemap_remove_folio(): take ``page`` out of the page cache (the
    cache's reference dropped; ``page.mapping`` cleared, so a fault that
    found it before sees it gone).  Caller holds the folio lock and has
    unmapped it (truncation) — unless a mutant says otherwise."""
    del inode.pages[page.index]
    page.mapping = None
    page.dirty = False
    kernel.mem.put_page(page)
