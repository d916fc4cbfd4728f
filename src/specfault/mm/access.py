"""User-space accesses: the MMU, the TLB, and the fault loop.

A load or store by a user thread is one atomic op (:class:`UserAccess`):
look up the running CPU's TLB; on a miss walk the page tables (setting the
accessed/dirty bits as the hardware does) and fill the TLB; if the
translation allows the access, do it on the page's bytes.  Otherwise the
CPU raises a page fault: the TLB entry for the address is dropped (x86
does so on every page fault) and ``do_user_addr_fault`` runs, after which
the access is retried.
"""

from __future__ import annotations

from typing import Any

from specfault.mm.fault import ACCESS_EXEC, ACCESS_WRITE, do_user_addr_fault
from specfault.mm.pgtable import _PAGE_ACCESSED, _PAGE_DIRTY, hw_allows, pte_pfn, walk
from specfault.runtime import STATE, Op

_FAULT = object()


class UserAccess(Op):
    """Translate ``addr`` and read ``n`` bytes / write ``data`` at it (within
    one page).  Returns the bytes read (b"" for writes/execs), or the
    ``_FAULT`` sentinel when the MMU raises a page fault."""

    __slots__ = ("mm", "addr", "access", "n", "data")
    kind = "user_access"

    def __init__(self, mm: Any, addr: int, access: int, n: int = 0, data: bytes = b"") -> None:
        self.mm = mm
        self.addr = addr
        self.access = access
        self.n = n
        self.data = data

    def perform(self) -> Any:
        mm = self.mm
        addr = self.addr
        write = self.access == ACCESS_WRITE
        exec_ = self.access == ACCESS_EXEC
        task = STATE.task
        cpu = task.cpu if task is not None else None
        key = (id(mm), addr >> 12)
        pte = cpu.tlb.get(key) if cpu is not None else None
        if pte is None or not hw_allows(pte, write, exec_):
            if pte is not None:
                del cpu.tlb[key]
                return _FAULT
            found = walk(mm.pgd, addr)
            if found is None:
                return _FAULT
            table, idx = found
            if table.freed_at is not None:
                from specfault.runtime import UseAfterFree
                raise UseAfterFree(table, table.freed_at, "MMU page-table walk")
            pte = table.entries[idx]
            if not hw_allows(pte, write, exec_):
                return _FAULT
            new = pte | _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
            if new != pte:
                table.entries[idx] = new
            pte = new
            if cpu is not None:
                cpu.tlb[key] = pte
                mm.cpumask.add(cpu)
        page = mm.kernel.mem.pages.get(pte_pfn(pte))
        if page is None:
            from specfault.runtime import ModelBug
            raise ModelBug(f"user access at {addr:#x} through a PTE to free pfn {pte_pfn(pte):#x}")
        off = addr & 0xFFF
        if write:
            page.write(off, self.data)
            return b""
        if exec_:
            return b""
        return page.read(off, self.n)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.mm, f"page {self.addr >> 12:#x}", "w" if self.access == ACCESS_WRITE else "r"),)

    def describe(self) -> str:
        kind = {0: "read", 1: "write", 2: "exec"}[self.access]
        return f"user {kind} {self.addr:#x}"


async def user_access(mm: Any, addr: int, access: int, n: int = 0, data: bytes = b"") -> bytes:
    """Do one access within one page, faulting as often as needed."""
    while True:
        got = await UserAccess(mm, addr, access, n, data)
        if got is not _FAULT:
            return got  # type: ignore[no-any-return]
        await do_user_addr_fault(mm, addr, access)
