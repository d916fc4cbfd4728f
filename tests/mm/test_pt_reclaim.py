"""Empty PTE-table reclaim on MADV_DONTNEED (CONFIG_PT_RECLAIM, Linux 6.14+;
mm/pt_reclaim.py), pinned to the host kernel's VmPTE (/proc/PID/status:
the process's page-table bytes, every level below the PGD)."""

from __future__ import annotations

from typing import Any

from hostkit import Host
from mmkit import assert_linux, on_model

import specfault as sf

PMD = 2 << 20
RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS | sf.MAP_FIXED


def vm_pte_kb(h: Any) -> int:
    """VmPTE in kB: the host's from /proc/self/status; the model's counted
    in its tree (4 KiB a table, the PGD not counted, as mm_pgtables_bytes)."""
    if isinstance(h, Host):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmPTE:"):
                    return int(line.split()[1])
        raise AssertionError("no VmPTE in /proc/self/status")

    def tables(t: Any) -> int:
        return 1 + (0 if t.level == 1 else sum(tables(c) for c in t.entries if c is not None))

    return 4 * (tables(h.mm.pgd) - 1)


def dontneed_steps(h: Any, base: int) -> tuple[int, ...]:
    """Four PMD-aligned 2 MiB ranges, one page written in each (4 PTE
    tables, a PMD and a PUD table), then MADV_DONTNEED of: the first two
    whole (both tables reclaimed: -8 kB), two pages of the third (kept),
    all of the fourth but its first page (less than a PMD's range: kept);
    then a 2 MiB mapping that straddles two PMDs, written and zapped whole
    (neither of its two tables is covered whole: kept).  The VmPTE deltas."""
    h.mmap(base, 4 * PMD, RW, ANON)
    before = vm_pte_kb(h)
    for i in range(4):
        h.write(base + i * PMD + 4096, b"x")
    out = [vm_pte_kb(h) - before]
    for addr, length in ((base, 2 * PMD), (base + 2 * PMD, 8192),
                         (base + 3 * PMD + 4096, PMD - 4096)):
        was = vm_pte_kb(h)
        h.madvise(addr, length, sf.MADV_DONTNEED)
        out.append(vm_pte_kb(h) - was)
    odd = base + 5 * PMD + PMD // 2
    h.mmap(odd, PMD, RW, ANON)
    h.write(odd, b"y")
    h.write(odd + PMD - 4096, b"z")
    was = vm_pte_kb(h)
    h.madvise(odd, PMD, sf.MADV_DONTNEED)
    out.append(vm_pte_kb(h) - was)
    return tuple(out)


def test_dontneed_reclaims_empty_tables_like_linux() -> None:
    assert_linux(dontneed_steps, (24, -8, 0, 0, 0), forked=True)


def test_reclaimed_table_refaults() -> None:
    """After the reclaim the range faults in afresh: zeroes, a new table."""
    def scenario(p: Any, base: int) -> tuple[bytes, int]:
        p.mmap(base, PMD, RW, ANON)
        p.write(base, b"gone")
        p.madvise(base, PMD, sf.MADV_DONTNEED)
        data = p.read(base, 4)
        return data, p.machine.vmstat()["pt_reclaim"]
    assert on_model(scenario) == (b"\0" * 4, 1)


def test_knob_off_keeps_tables() -> None:
    """pt_reclaim=False: the kernel without CONFIG_PT_RECLAIM (and any
    kernel before 6.14) keeps every table until munmap."""
    got = on_model(dontneed_steps, config=sf.Config().with_(pt_reclaim=False))
    assert got == (24, 0, 0, 0, 0)


def test_ipi_table_free_disables_reclaim() -> None:
    """PT_RECLAIM depends on MMU_GATHER_RCU_TABLE_FREE: with tables freed
    after an IPI round (lockless walkers with interrupts off) nothing is
    reclaimed."""
    got = on_model(dontneed_steps, config=sf.Config(page_table_free="ipi"))
    assert got == (24, 0, 0, 0, 0)
