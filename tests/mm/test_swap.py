"""Swap (mm/swapfile.py, mm/swap_state.py, do_swap_page) and reclaim
(mm/vmscan.py) as a program sees them: pagemap's swapped bit and slot,
contents that come back, /proc/vmstat's pswpin/pswpout/pgmajfault, smaps'
Swap:, the slots freed by every way a mapping goes, and the errno of each
bad input."""

from __future__ import annotations

import errno

import pytest

import specfault as sf

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
P = 4096


def _machine(**kw):  # type: ignore[no-untyped-def]
    kw.setdefault("nr_frames", 256)
    kw.setdefault("swap_pages", 65)          # 64 slots and the header
    return sf.Machine(**kw)


def _filled(p: sf.Process, n: int) -> int:
    a = p.mmap(0, n * P, RW, ANON)
    for i in range(n):
        p.write(a + i * P, b"page%d" % i)
    return a


def test_pageout_swaps_anon_pages_out_and_a_read_brings_them_back() -> None:
    m = _machine()
    p = m.spawn()
    a = _filled(p, 4)
    p.madvise(a, 4 * P, sf.MADV_PAGEOUT)
    slots = set()
    for i in range(4):
        e = p.pagemap(a + i * P)
        assert e.swapped and not e.present and e.swap_type == 0 and e.swap_offset >= 1
        slots.add(e.swap_offset)
    assert len(slots) == 4
    v = m.vmstat()
    assert v["pswpout"] == 4 and v["pswpin"] == 0
    assert p.smaps()[0]["Swap"] == 16 and p.smaps()[0]["Rss"] == 0
    assert m.meminfo() == {"SwapTotal": 256, "SwapFree": 240, "SwapCached": 0}
    m.check()
    faults, majors = v["pgfault"], v["pgmajfault"]
    assert p.read(a + P, 5) == b"page1"
    v = m.vmstat()
    # a major fault: the read drops mmap_lock and the fault is retried
    # (handle_mm_fault runs twice: pgfault counts both, as Linux's does)
    assert v["pswpin"] == 1 and v["pgmajfault"] == majors + 1 and v["pgfault"] == faults + 2
    assert v["fault_retry"] == 1
    e = p.pagemap(a + P)
    assert e.present and not e.swapped and e.exclusive
    # a read swap-in keeps the slot: the page is in the swap cache, clean
    assert m.meminfo()["SwapCached"] == 4 and m.meminfo()["SwapFree"] == 240
    # ... so paging it out again writes nothing
    p.madvise(a + P, P, sf.MADV_PAGEOUT)
    assert m.vmstat()["pswpout"] == 4 and p.pagemap(a + P).swapped
    assert p.read(a + P, 5) == b"page1"
    m.check()


def test_write_to_a_swapped_page_maps_it_writable_and_frees_the_slot() -> None:
    m = _machine()
    p = m.spawn()
    a = _filled(p, 1)
    p.madvise(a, P, sf.MADV_PAGEOUT)
    p.write(a + 1, b"X")
    assert p.read(a, 5) == b"pXge0"
    assert m.meminfo()["SwapFree"] == 256 and m.meminfo()["SwapCached"] == 0
    assert m.vmstat()["cow_fault"] == 0          # exclusive: no copy
    m.check()


def test_without_swap_anon_pages_stay() -> None:
    m = sf.Machine(nr_frames=256)
    p = m.spawn()
    a = _filled(p, 2)
    pfn = p.pagemap(a).pfn
    p.madvise(a, 2 * P, sf.MADV_PAGEOUT)
    assert p.pagemap(a).present and p.pagemap(a).pfn == pfn
    assert m.vmstat()["pswpout"] == 0 and m.meminfo()["SwapTotal"] == 0
    m.check()


def test_swap_full_pages_that_find_no_slot_stay() -> None:
    m = _machine(swap_pages=3)                  # two slots
    p = m.spawn()
    a = _filled(p, 4)
    p.madvise(a, 4 * P, sf.MADV_PAGEOUT)
    swapped = [p.pagemap(a + i * P).swapped for i in range(4)]
    assert swapped == [True, True, False, False]
    assert m.vmstat()["swap_alloc_fail"] == 2 and m.meminfo()["SwapFree"] == 0
    assert [p.read(a + i * P, 5) for i in range(4)] == [b"page%d" % i for i in range(4)]
    m.check()


def test_pageout_of_an_unmapped_range_is_enomem_after_advising_the_rest() -> None:
    m = _machine()
    p = m.spawn()
    a = _filled(p, 3)
    p.munmap(a + P, P)
    with pytest.raises(OSError) as exc:
        p.madvise(a, 3 * P, sf.MADV_PAGEOUT)
    assert exc.value.errno == errno.ENOMEM
    assert p.pagemap(a).swapped and p.pagemap(a + 2 * P).swapped
    with pytest.raises(OSError) as exc:
        p.madvise(a + P, P, sf.MADV_PAGEOUT)
    assert exc.value.errno == errno.ENOMEM
    m.check()


def test_pageout_of_a_locked_mapping_is_einval() -> None:
    m = _machine()
    p = m.spawn()
    a = p.mmap(0, P, RW, ANON | sf.MAP_LOCKED)
    p.write(a, b"x")
    with pytest.raises(OSError) as exc:
        p.madvise(a, P, sf.MADV_PAGEOUT)
    assert exc.value.errno == errno.EINVAL
    assert p.pagemap(a).present


def test_fork_shares_swap_entries_and_exit_frees_every_slot() -> None:
    m = _machine()
    p = m.spawn()
    a = _filled(p, 4)
    p.madvise(a, 4 * P, sf.MADV_PAGEOUT)
    c = p.fork()
    assert c.pagemap(a).swapped and c.pagemap(a).swap_offset == p.pagemap(a).swap_offset
    assert c.smaps()[0]["Swap"] == 16
    m.check()
    assert c.read(a + 2 * P, 5) == b"page2" and p.read(a + 2 * P, 5) == b"page2"
    assert p.pagemap(a + 2 * P).pfn == c.pagemap(a + 2 * P).pfn      # one swap-cache folio
    c.write(a + 3 * P, b"child")
    assert p.read(a + 3 * P, 5) == b"page3" and c.read(a + 3 * P, 5) == b"child"
    p.write(a, b"paren")
    assert c.read(a, 5) == b"page0"
    m.check()
    c.exit()
    m.check()
    p.exit()
    m.check()
    assert m.meminfo() == {"SwapTotal": 256, "SwapFree": 256, "SwapCached": 0}


@pytest.mark.parametrize("how", ["munmap", "dontneed", "free"])
def test_unmapping_a_swapped_page_frees_its_slot(how: str) -> None:
    m = _machine()
    p = m.spawn()
    a = _filled(p, 2)
    p.madvise(a, 2 * P, sf.MADV_PAGEOUT)
    if how == "munmap":
        p.munmap(a, 2 * P)
    else:
        p.madvise(a, 2 * P, sf.MADV_DONTNEED if how == "dontneed" else sf.MADV_FREE)
        assert not p.pagemap(a).swapped and p.read(a, 5) == bytes(5)
    assert m.meminfo()["SwapFree"] == 256
    m.check()


def test_madv_free_pages_are_discarded_by_pageout_not_swapped() -> None:
    m = _machine()
    p = m.spawn()
    a = _filled(p, 2)
    p.madvise(a, 2 * P, sf.MADV_FREE)
    p.write(a + P, b"again")                     # redirtied: kept, swap-backed again
    p.madvise(a, 2 * P, sf.MADV_PAGEOUT)
    assert not p.pagemap(a).present and not p.pagemap(a).swapped
    assert p.read(a, 5) == bytes(5)
    assert m.vmstat()["pglazyfreed"] == 1
    assert p.read(a + P, 5) == b"again"
    m.check()


def test_mremap_moves_and_mprotect_keeps_swap_entries() -> None:
    m = _machine()
    p = m.spawn()
    a = _filled(p, 2)
    p.madvise(a, 2 * P, sf.MADV_PAGEOUT)
    off = p.pagemap(a + P).swap_offset
    b = p.mremap(a, 2 * P, 2 * P, sf.MREMAP_MAYMOVE | sf.MREMAP_FIXED, a + 512 * P)
    assert p.pagemap(b + P).swapped and p.pagemap(b + P).swap_offset == off
    p.mprotect(b, 2 * P, sf.PROT_READ)
    assert p.pagemap(b + P).swapped
    assert p.read(b + P, 5) == b"page1"
    with pytest.raises(sf.SegmentationFault):
        p.write(b, b"x")
    m.check()


def test_cold_deactivates_and_keeps_pages() -> None:
    m = _machine()
    p = m.spawn()
    a = _filled(p, 2)
    p.madvise(a, 2 * P, sf.MADV_COLD)
    assert p.pagemap(a).present and m.vmstat()["pswpout"] == 0
    assert m.vmstat()["pgdeactivate"] == 2
    m.check()


def test_memory_pressure_reclaims_to_swap_instead_of_oom() -> None:
    """More anonymous memory than frames: kswapd (woken below low) and
    direct reclaim (below min) swap the oldest pages out; every page keeps
    its contents."""
    m = sf.Machine(nr_frames=64, swap_pages=129, watermark_min=8)
    p = m.spawn()
    n = 96
    a = p.mmap(0, n * P, RW, ANON)
    for i in range(n):
        p.write(a + i * P, b"page%d" % i)
    v = m.vmstat()
    assert v["pswpout"] > 0 and v["kswapd_wake"] > 0 and v["pgsteal_kswapd"] > 0
    assert v["pgscan_kswapd"] + v["pgscan_direct"] >= v["pswpout"]
    assert m.kernel.mem.nr_free() >= 1
    m.check()
    assert all(p.read(a + i * P, 6).rstrip(b"\0") == b"page%d" % i for i in range(n))
    m.check()
    p.exit()
    assert m.meminfo()["SwapFree"] == 128 * 4
    m.check()


def test_memory_pressure_without_swap_is_oom() -> None:
    m = sf.Machine(nr_frames=64, watermark_min=8)
    p = m.spawn()
    a = p.mmap(0, 96 * P, RW, ANON)
    with pytest.raises(sf.OutOfMemory):
        for i in range(96):
            p.write(a + i * P, b"x")
    assert m.vmstat()["pswpout"] == 0
    m.check()


def test_reclaim_drops_clean_file_pages_first() -> None:
    m = sf.Machine(nr_frames=64, swap_pages=129, watermark_min=8)
    m.create_file("/f", b"f" * (24 * P))
    for page in m.kernel.fs.inodes["/f"].pages.values():
        page.dirty = False              # written back (the model has no writeback)
    p = m.spawn()
    a = p.mmap(0, 48 * P, RW, ANON)
    for i in range(48):
        p.write(a + i * P, b"x")
    v = m.vmstat()
    assert v["pgsteal_file"] > 0 and v["pgsteal_file"] >= v["pgsteal_anon"]
    fd = p.open("/f")
    assert p.pread(fd, 4, 23 * P) == b"ffff"     # dropped pages come back from the file
    m.check()


@pytest.mark.parametrize("protocol", ["classic", "speculative", "pervma", "dufour"])
def test_swap_read_holds_neither_mmap_lock_nor_a_vma_lock(protocol: str, monkeypatch) -> None:
    """VM_FAULT_RETRY: the swap-in drops the fault's lock for the I/O and
    the fault is retried with FAULT_FLAG_TRIED (which maps the folio the
    read left in the swap cache)."""
    import specfault.mm.memory as memory
    from specfault.runtime import STATE

    held_during_io: list[list[str]] = []
    real = memory.swap_read_folio

    async def spy(kernel, page, entry):  # type: ignore[no-untyped-def]
        held_during_io.append([getattr(lk, "name", "?") for lk in STATE.task.held])
        await real(kernel, page, entry)

    monkeypatch.setattr(memory, "swap_read_folio", spy)
    m = _machine(fault_protocol=protocol)
    p = m.spawn()
    p.thread()                                   # two users: speculation is tried
    a = _filled(p, 2)
    p.madvise(a, 2 * P, sf.MADV_PAGEOUT)
    assert p.read(a + P, 5) == b"page1"
    assert len(held_during_io) == 1
    assert not [n for n in held_during_io[0] if "mmap_lock" in n or "vma" in n], held_during_io
    assert m.vmstat()["fault_retry"] == 1
    if protocol == "pervma":
        assert m.vmstat()["vma_lock_retry"] == 1
    m.check()


def test_populate_reads_swap_under_the_lock_without_retry() -> None:
    """GUP-style callers (MADV_POPULATE_*) pass no FAULT_FLAG_ALLOW_RETRY:
    the swap-in reads under mmap_lock and maps at once."""
    m = _machine()
    p = m.spawn()
    a = _filled(p, 2)
    p.madvise(a, 2 * P, sf.MADV_PAGEOUT)
    p.madvise(a, 2 * P, sf.MADV_POPULATE_READ)
    assert p.pagemap(a).present and p.pagemap(a + P).present
    assert m.vmstat()["fault_retry"] == 0 and m.vmstat()["pswpin"] == 2
    m.check()


def test_a_write_reuses_a_swap_cache_page_once_its_slot_is_unused() -> None:
    """wp_can_reuse_anon_folio(): the parent's page, shared through a swap
    entry with a child that has exited, is reused (its slot freed), not
    copied."""
    m = _machine()
    p = m.spawn()
    a = _filled(p, 1)
    p.madvise(a, P, sf.MADV_PAGEOUT)
    c = p.fork()
    assert c.read(a, 5) == b"page0" and p.read(a, 5) == b"page0"
    pfn = p.pagemap(a).pfn
    c.exit()
    p.write(a, b"P")
    assert p.pagemap(a).pfn == pfn and m.vmstat()["cow_fault"] == 0
    assert m.meminfo() == {"SwapTotal": 256, "SwapFree": 256, "SwapCached": 0}
    m.check()
