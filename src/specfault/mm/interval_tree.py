"""The interval tree of VMAs (mm/interval_tree.c): a file's i_mmap and an
anon_vma's rb_root, queried by page offset.  mm/rmap.py says who changes
them and under which lock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class VmaIntervalTree:
    """``struct rb_root_cached`` of VMAs keyed by their file-page interval
    (``vma_interval_tree_*`` / ``anon_vma_interval_tree_*``)."""

    __slots__ = ("vmas",)

    def __init__(self) -> None:
        self.vmas: dict[int, Any] = {}

    def insert(self, vma: Any) -> None:
        self.vmas[id(vma)] = vma

    def remove(self, vma: Any) -> None:
        self.vmas.pop(id(vma), None)

    def __contains__(self, vma: Any) -> bool:
        return id(vma) in self.vmas

    def __len__(self) -> int:
        return len(self.vmas)

    def foreach(self, first: int, last: int) -> Iterator[Any]:
        """The VMAs whose pages [vm_pgoff, vm_pgoff + pages - 1] meet
        [first, last] (a snapshot: the caller may sleep between them)."""
        for vma in list(self.vmas.values()):
            start = vma.vm_pgoff
            if start <= last and start + ((vma.vm_end - vma.vm_start) >> 12) - 1 >= first:
                yield vma

    def all(self) -> list[Any]:
        return list(self.vmas.values())
