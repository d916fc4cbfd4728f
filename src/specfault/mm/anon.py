"""anon_vma bookkeeping at fork (mm/rmap.c anon_vma_fork)."""

from __future__ import annotations

from specfault.mm.vma import AnonVma, VmArea


def anon_vma_fork(vma: VmArea, pvma: VmArea) -> None:
    """The child's VMA ``vma`` (a copy of ``pvma``) inherits the parent's
    anon_vma chain and gets an anon_vma of its own, child of the parent's.
    Its chain then has more than one entry: it is a "fork child", which
    limits its merging (vma_is_fork_child)."""
    if pvma.anon_vma is None:
        vma.anon_vma, vma.anon_vma_chain = None, []
        return
    av = AnonVma(parent=pvma.anon_vma)
    vma.anon_vma = av
    vma.anon_vma_chain = list(pvma.anon_vma_chain) + [av]
