"""Shorthand for writing oracle programs in tests."""

from __future__ import annotations

from typing import Any

from specfault.oracle.program import PAGE_SIZE, Program

RW = ["PROT_READ", "PROT_WRITE"]
R = ["PROT_READ"]
ANON = ["MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_FIXED"]


def mmap(page: int, npages: int, prot: list[str] = RW, flags: list[str] = ANON, proc: int = 0,
         **kw: Any) -> dict[str, Any]:
    return {"op": "mmap", "proc": proc, "page": page, "npages": npages, "prot": prot, "flags": flags, **kw}


def fmap(page: int, npages: int, offset: int = 0, prot: list[str] = R, shared: bool = False,
         proc: int = 0, file: int = 0) -> dict[str, Any]:
    flags = ["MAP_SHARED" if shared else "MAP_PRIVATE", "MAP_FIXED"]
    return mmap(page, npages, prot, flags, proc, file=file, offset=offset)


def touch(page: int, kind: str = "read", proc: int = 0, **kw: Any) -> dict[str, Any]:
    return {"op": "touch", "proc": proc, "page": page, "kind": kind, **kw}


def op(name: str, proc: int = 0, **kw: Any) -> dict[str, Any]:
    return {"op": name, "proc": proc, **kw}


def prog(*steps: dict[str, Any], region: int = 64, file_pages: int = 8) -> Program:
    p = Program(steps=list(steps), region=region, files=[{"size": file_pages * PAGE_SIZE}])
    p.validate()
    return p


def page(state: dict[str, Any], proc: int, n: int, guard: int = 4) -> str:
    """The entry of region page ``n`` of ``proc`` in a snapshot."""
    return str(state[str(proc)]["pages"][n + guard])
