"""Page migration (mm/migrate.py): try_to_migrate, remove_migration_ptes,
the fault's wait, compaction; and how zap, mprotect and fork treat a
migration entry — each step staged with the direct driver."""

from __future__ import annotations

from typing import Any

import pytest

import specfault as sf
from specfault.mm.migrate import (
    kcompactd_do_work,
    migration_entry_wait,
    remove_migration_ptes,
    try_to_migrate,
)
from specfault.mm.page import GetPage, folio_trylock, folio_unlock
from specfault.mm.pgtable import (
    PMD_LEVEL,
    SWP_MIGRATION_READ,
    SWP_MIGRATION_READ_EXCLUSIVE,
    SWP_MIGRATION_WRITE,
    is_migration_pte,
    pte_present,
    pte_to_swp_entry,
    pte_write,
    swp_offset_pfn,
    swp_type,
    walk,
)
from specfault.mm.rmap import TlbUbc, try_to_unmap_flush

P = 4096
RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS


def setup(pages: int = 2) -> tuple[sf.Machine, Any, int]:
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    a = p.mmap(0, pages * P, RW, ANON)
    for i in range(pages):
        p.write(a + i * P, b"page%d" % i)
    return m, p, a


async def _await(op: Any) -> Any:
    return await op


def run_op(p: Any, op: Any) -> Any:
    """An op (a lock, a walk step) run alone by the direct driver."""
    return p._run(_await(op))


def pte_of(p: Any, addr: int) -> int:
    pt = p._run(walk(p.mm, addr))
    return pt.entries[(addr >> 12) & 511] if pt.level == 1 else 0


def page_at(p: Any, addr: int) -> Any:
    return p.machine.kernel.mem.pages[p.pagemap(addr).pfn]


def unmap_for_migration(p: Any, page: Any) -> None:
    """migrate_folio_unmap's part: a reference (the isolation's), the folio
    locked while the entries are installed, the flush — leaving the entries
    and the reference (:func:`restore` ends it).  The folio is unlocked
    again before the test's syscalls run: a migrator never takes mmap_lock
    under the folio lock, and lockdep would see the test do it."""
    run_op(p, GetPage(page))
    assert run_op(p, folio_trylock(page))
    ubc = TlbUbc()
    p._run(try_to_migrate(page, ubc))
    p._run(try_to_unmap_flush(ubc))
    run_op(p, folio_unlock(page))


def restore(p: Any, page: Any) -> None:
    """A failed migration's end: the entries back to ``page`` (under the
    folio lock), the isolation reference dropped."""
    assert run_op(p, folio_trylock(page))
    p._run(remove_migration_ptes(page, page))
    run_op(p, folio_unlock(page))
    p.machine.kernel.mem.put_page(page)


def test_compaction_moves_pages_and_keeps_contents() -> None:
    m, p, a = setup()
    before = [p.pagemap(a + i * P).pfn for i in range(2)]
    assert p._run(kcompactd_do_work(m.kernel)) == 2
    after = [p.pagemap(a + i * P).pfn for i in range(2)]
    assert all(x > y for x, y in zip(after, before, strict=True))   # to the top of memory
    assert [p.read(a + i * P, 5) for i in range(2)] == [b"page0", b"page1"]
    # exclusive and writable as before: a write reuses the copy, no COW
    copy = page_at(p, a)
    p.write(a, b"again")
    assert p.pagemap(a).pfn == copy.pfn and copy.anon_exclusive
    assert m.vmstat()["pgmigrate_success"] == 2
    m.check()


def test_entry_kinds() -> None:
    """Writable PTE → writable entry; read-only but exclusive →
    readable-exclusive; COW-shared after a fork → readable."""
    m, p, a = setup(2)
    p.mprotect(a + P, P, sf.PROT_READ)

    def kind(i: int) -> int:
        page = page_at(p, a + i * P)
        unmap_for_migration(p, page)
        got = swp_type(pte_to_swp_entry(pte_of(p, a + i * P)))
        restore(p, page)
        return got

    assert [kind(0), kind(1)] == [SWP_MIGRATION_WRITE, SWP_MIGRATION_READ_EXCLUSIVE]
    c = p.fork()
    assert kind(0) == SWP_MIGRATION_READ
    assert swp_type(pte_to_swp_entry(pte_of(c, a))) != SWP_MIGRATION_READ   # restored
    m.check()


def test_writable_entry_restores_writable_pte() -> None:
    m, p, a = setup(1)
    page = page_at(p, a)
    unmap_for_migration(p, page)
    pte = pte_of(p, a)
    assert is_migration_pte(pte) and swp_offset_pfn(pte_to_swp_entry(pte)) == page.pfn
    assert swp_type(pte_to_swp_entry(pte)) == SWP_MIGRATION_WRITE
    assert page.mapcount == 0 and p.mm.rss["anon"] == 1  # not a mapping; still RSS
    restore(p, page)
    assert pte_present(pte_of(p, a)) and pte_write(pte_of(p, a)) and page.anon_exclusive
    m.check()


def test_extra_reference_fails_the_move() -> None:
    """folio_migrate_mapping's refcount check: a reference beyond the
    isolation's (a pin, a COW copy in progress) is -EAGAIN; the PTE is
    restored to the same page."""
    m, p, a = setup(1)
    page = page_at(p, a)
    page.refcount += 1                                    # someone's reference
    assert p._run(kcompactd_do_work(m.kernel)) == 0
    assert p.pagemap(a).pfn == page.pfn and pte_write(pte_of(p, a))
    assert m.vmstat()["pgmigrate_fail"] == 1
    page.refcount -= 1
    m.check()


def test_mprotect_makes_a_writable_entry_readable() -> None:
    """change_pte_range(): a writable migration entry loses its write bit
    (readable-exclusive), so the copy is not mapped writable in a
    read-only VMA."""
    m, p, a = setup(1)
    page = page_at(p, a)
    unmap_for_migration(p, page)
    p.mprotect(a, P, sf.PROT_READ)
    assert swp_type(pte_to_swp_entry(pte_of(p, a))) == SWP_MIGRATION_READ_EXCLUSIVE
    restore(p, page)
    assert pte_present(pte_of(p, a)) and not pte_write(pte_of(p, a)) and page.anon_exclusive
    m.check()


def test_zap_of_a_migration_entry() -> None:
    """MADV_DONTNEED zaps the entry (the page's RSS goes); the migrator's
    remove_migration_ptes then finds nothing."""
    m, p, a = setup(1)
    page = page_at(p, a)
    unmap_for_migration(p, page)
    p.madvise(a, P, sf.MADV_DONTNEED)
    assert pte_of(p, a) == 0 and p.mm.rss["anon"] == 0
    restore(p, page)
    assert pte_of(p, a) == 0 and page.mapcount == 0
    m.check()


def test_fork_copies_a_migration_entry_readable() -> None:
    m, p, a = setup(1)
    page = page_at(p, a)
    unmap_for_migration(p, page)
    c = p.fork()
    for proc in (p, c):
        assert swp_type(pte_to_swp_entry(pte_of(proc, a))) == SWP_MIGRATION_READ
    assert c.mm.rss["anon"] == 1
    restore(p, page)
    assert page.mapcount == 2 and not page.anon_exclusive
    c.write(a, b"child")                                  # COW, both ways
    assert p.read(a, 5) == b"page0" and c.read(a, 5) == b"child"
    m.check()


def test_migration_entry_wait_returns_when_the_entry_is_gone() -> None:
    m, p, a = setup(1)
    pmd = p._run(walk(p.mm, a, PMD_LEVEL))
    p._run(migration_entry_wait(p.mm, pmd, a))            # a present PTE: no wait
    assert m.vmstat()["pgmigrate_wait"] == 0


@pytest.mark.parametrize("pages", [1, 3])
def test_compaction_with_nothing_to_move_above(pages: int) -> None:
    """The scanners meet: nothing below the free scanner is movable twice."""
    m, p, a = setup(pages)
    assert p._run(kcompactd_do_work(m.kernel)) == pages
    assert p._run(kcompactd_do_work(m.kernel)) == 0
    m.check()
