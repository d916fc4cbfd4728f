"""The invariants of the reverse map, the swap device and the LRU (issue
12), kept apart from check/invariants.py's structural ones so the two
grow independently; ``kernel_problems`` calls :func:`pressure_problems`."""

from __future__ import annotations

from typing import Any

from specfault.mm.page import folio_lru_list
from specfault.mm.pgtable import is_swap_pte, non_swap_entry, pte_to_swp_entry, swp_offset
from specfault.mm.rmap import check_rmap
from specfault.mm.swap_state import folio_test_locked
from specfault.mm.swapfile import SWAP_HAS_CACHE, get_swap_device, swap_used


def _ptes(mm: Any) -> list[int]:
    out: list[int] = []
    stack = [mm.pgd]
    while stack:
        t = stack.pop()
        if t.level == 1:
            out.extend(e for e in t.entries if e)
        else:
            stack.extend(c for c in t.entries if c is not None and type(c) is not int)
    return out


def swap_problems(kernel: Any, quiescent: bool = True) -> list[str]:
    """Swap state against the page tables and the swap cache:

    * every swap PTE names a slot in use on a device;
    * at quiescence, each slot's count is the number of swap PTEs naming
      it (fork's copies included), and each mm's MM_SWAPENTS counts its
      swap PTEs;
    * a slot has SWAP_HAS_CACHE exactly when the swap cache holds a folio
      for it, and that folio says so (PG_swapcache, folio->swap);
    * at quiescence no slot is leaked: one no PTE refers to must hold a
      folio that is mapped (a read swap-in keeps its slot) or on the LRU,
      where reclaim will find it and free the slot (Linux's orphaned
      swap-cache folios: a zap that found the folio locked by reclaim
      leaves it so)."""
    problems: list[str] = []
    refs: dict[int, int] = {}
    for mm in kernel.mms:
        if mm.dead:
            continue
        n = 0
        for pte in _ptes(mm):
            if is_swap_pte(pte) and not non_swap_entry(pte_to_swp_entry(pte)):
                n += 1
                entry = pte_to_swp_entry(pte)
                si = get_swap_device(kernel, entry)
                if si is None or not si.swap_map[swp_offset(entry)]:
                    problems.append(f"{mm.label()}: swap PTE {pte:#x} names a free slot {entry:#x}")
                refs[entry] = refs.get(entry, 0) + 1
        if quiescent and mm.rss["swap"] != n:
            problems.append(f"{mm.label()}: rss[swap] is {mm.rss['swap']} but {n} swap PTEs")
    used = dict(swap_used(kernel))
    for entry, byte in used.items():
        count, cache = byte & ~SWAP_HAS_CACHE, bool(byte & SWAP_HAS_CACHE)
        folio = kernel.swap_cache.get(entry)
        if cache and folio is None and quiescent:
            problems.append(f"slot {entry:#x} has SWAP_HAS_CACHE but no folio in the swap cache")
        if not cache and folio is not None:
            problems.append(f"swap cache holds {folio!r} for {entry:#x} without SWAP_HAS_CACHE")
        if quiescent and count != refs.get(entry, 0):
            problems.append(f"slot {entry:#x}: swap count {count} but {refs.get(entry, 0)} swap PTEs")
        if quiescent and not count and folio is not None and not folio.mapcount \
                and not folio_test_locked(folio) and folio.lru is None:
            problems.append(f"slot {entry:#x} leaked: no swap PTE, its folio {folio!r} unmapped")
    for entry, folio in kernel.swap_cache.items():
        if not folio.swapcache or folio.swap != entry:
            problems.append(f"swap cache[{entry:#x}] holds {folio!r} (swap {folio.swap:#x})")
        if folio.freed:
            problems.append(f"swap cache[{entry:#x}] holds freed {folio!r}")
        if entry not in used:
            problems.append(f"swap cache[{entry:#x}] for a free slot")
    return problems


def lru_problems(kernel: Any, quiescent: bool = True) -> list[str]:
    """Each LRU list holds live pages that say they are on it; at
    quiescence every mapped or cached page is on the list of its kind."""
    problems: list[str] = []
    mem = kernel.mem
    for lru, lst in enumerate(mem.lru):
        for pfn, page in lst.items():
            if page.freed or page.pfn != pfn or page.lru != lru:
                problems.append(f"LRU list {lru} holds {page!r} (its lru {page.lru})")
            elif quiescent and folio_lru_list(page) != lru:
                problems.append(f"{page!r} on LRU list {lru}, belongs on {folio_lru_list(page)}")
    if quiescent:
        for page in mem.pages.values():
            if page.zero or page.lru is not None or page.compound_head is not None:
                continue        # (a PMD-mapped THP is not on the LRU: huge_memory.py)
            if page.mapcount or page.swapcache or (page.mapping is not None and not page.anon):
                problems.append(f"{page!r} is off the LRU")
    return problems


def pressure_problems(kernel: Any, quiescent: bool = True) -> list[str]:
    """Reverse map (mm/rmap.py ``check_rmap``), swap and LRU consistency."""
    return check_rmap(kernel) + swap_problems(kernel, quiescent) + lru_problems(kernel, quiescent)
