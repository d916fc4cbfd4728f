"""Pinned pages: GUP against COW and fork (mm/gup.py).

Layout (P = the process, its threads T0, T1, T2; C = a child forked by T1):

    R:  [ page0 | page1 ]   anonymous, read-write, page0 written (exclusive
                            to P until T1 forks)

A pin (``pin_user_pages``) is taken by one step, read through by a later
one and released by a third, as a driver would: the world keeps it by name
between steps (``World.handles``).
"""

from __future__ import annotations

from typing import Any

from specfault.check.scenarios.base import MmSpec, access, syscall
from specfault.check.scenarios.races import PAGE, region
from specfault.constants import MADV_DONTNEED
from specfault.mm.fork import dup_mmap, exit_mmap
from specfault.mm.gup import gup_dma, pin_user_pages, unpin_user_pages
from specfault.mm.madvise import sys_madvise


def _pin(name: str, key: str, write: bool = False, longterm: bool = False):  # type: ignore[no-untyped-def]
    async def fn(w: Any, p: Any) -> Any:
        h = await pin_user_pages(p.mm, w.addr[key], PAGE, write, longterm)
        if isinstance(h, int):
            return h
        w.handles[name] = h
        return 0

    return fn


def _dma_read(name: str):  # type: ignore[no-untyped-def]
    async def fn(w: Any, p: Any) -> Any:
        h = w.handles.get(name)
        return ("no pin",) if h is None else await gup_dma(h, 0, 8)

    return fn


def _unpin(name: str):  # type: ignore[no-untyped-def]
    async def fn(w: Any, p: Any) -> Any:
        h = w.handles.pop(name, None)
        if h is not None:
            await unpin_user_pages(h)
        return 0

    return fn


async def _fork_child_writes(w: Any, p: Any) -> Any:
    """fork; the child writes page0 (its COW fault: reuse or copy), reads
    it back, and exits.  Returns what the child read."""
    from specfault.mm.access import user_access
    from specfault.mm.fault import ACCESS_READ, ACCESS_WRITE
    child_mm = await dup_mmap(p.mm)
    await user_access(child_mm, w.addr["R"], ACCESS_WRITE, 0, b"child")
    seen = await user_access(child_mm, w.addr["R"], ACCESS_READ, 8)
    await exit_mmap(child_mm)
    return seen


SPECS: list[MmSpec] = [
    MmSpec(
        "cow-vs-pin-vs-fork",
        "T0 takes a long-term read-only pin of page0 (an RDMA or io_uring "
        "registration), drops the page with MADV_DONTNEED, reads through "
        "the pin and unpins; T1 forks, the child writes page0 and exits; T2 "
        "writes page0.  The pin must see only what P mapped there while it "
        "did (coherence: no COW copies P's page away from the pin) and never "
        "the child's write (isolation: CVE-2020-29374 with the roles of "
        "parent and child swapped).",
        region(threads=3), [
            ("P", [syscall("pin R (ro, longterm)", _pin("pin", "R", longterm=True)),
                   syscall("madvise DONTNEED R", lambda w, p: sys_madvise(
                       p.mm, w.addr["R"], PAGE, MADV_DONTNEED)),
                   syscall("read through the pin", _dma_read("pin")),
                   syscall("unpin", _unpin("pin"))]),
            ("P", [syscall("fork; child writes R; child exits", _fork_child_writes)]),
            ("P", [access("R", "write")])]),
]
