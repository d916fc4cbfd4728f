"""The VMA tree: a range map [start, end) -> VMA that lockless readers walk.

Why it is shaped so
-------------------
Linux keeps VMAs in a maple tree: a B-tree of ranges whose writers (holding
``mmap_lock`` for write) never modify a node a reader may be looking at —
they build replacement nodes and publish them with one pointer store, and
the replaced nodes are freed after an RCU grace period.  Readers walk the
tree under ``rcu_read_lock()`` and see either the old or the new version,
never a torn one.

This is the same design with less cleverness: a B-tree of up to ``CAP``
slots per node, updated by *path copying* (every node on the path to a
change is copied; siblings are shared), and the new root published with a
single store.  Like the maple tree, the tree's own ranges are authoritative
for lookups: a VMA's ``vm_start``/``vm_end`` fields may be changed by a
writer before the tree is updated, exactly as in ``__split_vma``.

Only non-empty ranges are stored; gaps are implicit.

Fields
------
Node (immutable once published)
    leaf     True for leaves (slots are VMAs), False for internal nodes
    starts   per slot: start of the range (internal: min start of the child)
    ends     per slot: end of the range (internal: max end of the child)
    slots    VMAs or child nodes
VmaTree
# protected by mmap_lock (write) for writers; readers: rcu_dereference
    root     the current root node, or None when empty
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from typing import Any

from specfault.runtime import KObject

CAP = 16          # slots per node (maple_range_64 has 16)
MIN = CAP // 4    # fewer than this and a node is merged with a sibling


class Node(KObject):
    __slots__ = ("leaf", "starts", "ends", "slots")

    def __init__(self, leaf: bool, items: list[tuple[int, int, Any]]) -> None:
        super().__init__()
        self.leaf = leaf
        self.starts = [a for a, _, _ in items]
        self.ends = [b for _, b, _ in items]
        self.slots = [v for _, _, v in items]

    def items(self) -> list[tuple[int, int, Any]]:
        return list(zip(self.starts, self.ends, self.slots, strict=True))

    def label(self) -> str:
        return f"maple node {'leaf' if self.leaf else 'internal'} [{self.starts[0]:#x}.." \
               f"{self.ends[-1]:#x})" if self.starts else "maple node (empty)"


def _chunk(items: list[tuple[int, int, Any]], leaf: bool) -> list[Node]:
    """Pack items into as few nodes as fit CAP, sizes as even as possible."""
    n = len(items)
    if n == 0:
        return []
    k = -(-n // CAP)
    nodes = []
    for i in range(k):
        part = items[i * n // k:(i + 1) * n // k]
        nodes.append(Node(leaf, part))
    return nodes


def _as_item(node: Node) -> tuple[int, int, Node]:
    return (node.starts[0], node.ends[-1], node)


class VmaTree:
    """``mm->mm_mt``.  Writer methods return the nodes they replaced; the
    caller retires them through RCU once the new root is published."""

    __slots__ = ("root",)

    def __init__(self) -> None:
        self.root: Node | None = None

    # ------------------------------------------------------------------ read
    def find(self, addr: int) -> Any:
        """find_vma(): the first VMA with end > addr, or None.  (The fault
        path's hot loop: kept apart from :meth:`find_range` on purpose.)"""
        node = self.root
        while node is not None:
            i = bisect_right(node.ends, addr)
            if i == len(node.ends):
                return None
            if node.leaf:
                return node.slots[i]
            node = node.slots[i]
        return None

    def find_range(self, addr: int) -> tuple[int, int, Any] | None:
        """Like :meth:`find` but also returns the tree's range for the VMA."""
        node = self.root
        if node is None:
            return None
        while True:
            i = bisect_right(node.ends, addr)
            if i == len(node.ends):
                return None
            if node.leaf:
                return node.starts[i], node.ends[i], node.slots[i]
            node = node.slots[i]

    def items(self, lo: int = 0) -> Iterator[tuple[int, int, Any]]:
        """(start, end, vma) in address order, from the first with end > lo."""
        if self.root is not None:
            yield from self._walk(self.root, lo)

    def _walk(self, node: Node, lo: int) -> Iterator[tuple[int, int, Any]]:
        i = bisect_right(node.ends, lo)
        if node.leaf:
            for j in range(i, len(node.slots)):
                yield node.starts[j], node.ends[j], node.slots[j]
        else:
            for j in range(i, len(node.slots)):
                yield from self._walk(node.slots[j], lo)

    def vmas(self, lo: int = 0) -> Iterator[Any]:
        for _, _, vma in self.items(lo):
            yield vma

    def prev(self, addr: int) -> Any:
        """The last VMA with start < addr (vma_prev from addr), or None."""
        found = None
        for a, _, v in self.items(0):
            if a >= addr:
                break
            found = v
        return found

    def reverse_items(self) -> list[tuple[int, int, Any]]:
        return list(self.items(0))[::-1]

    def __len__(self) -> int:
        return sum(1 for _ in self.items(0))

    def depth(self) -> int:
        d, node = 0, self.root
        while node is not None:
            d += 1
            node = None if node.leaf else node.slots[0]
        return d

    # ----------------------------------------------------------------- write
    def store(self, start: int, end: int, entry: Any) -> tuple[Node | None, list[Node]]:
        """mas_store(): map [start, end) to ``entry`` (None erases), trimming
        whatever overlapped.  Returns (new root, replaced nodes); the caller
        publishes the root (one store) and retires the replaced nodes."""
        if start >= end:
            raise ValueError(f"VmaTree.store: empty range {start:#x}-{end:#x}")
        retired: list[Node] = []
        if self.root is None:
            nodes = _chunk([(start, end, entry)], True) if entry is not None else []
        else:
            nodes = self._store(self.root, start, end, entry, retired)
        while len(nodes) > 1:
            nodes = _chunk([_as_item(n) for n in nodes], False)
        root = nodes[0] if nodes else None
        while root is not None and not root.leaf and len(root.slots) == 1:
            retired.append(root)
            root = root.slots[0]
        return root, retired

    def _store(self, node: Node, s: int, e: int, entry: Any, retired: list[Node]) -> list[Node]:
        retired.append(node)
        if node.leaf:
            items: list[tuple[int, int, Any]] = []
            for a, b, v in zip(node.starts, node.ends, node.slots, strict=True):
                if b <= s or a >= e:
                    items.append((a, b, v))
                    continue
                if a < s:
                    items.append((a, s, v))
                if b > e:
                    items.append((e, b, v))
            if entry is not None:
                pos = bisect_right([a for a, _, _ in items], s)
                items.insert(pos, (s, e, entry))
            return _chunk(items, True)
        n = len(node.slots)
        home = min(bisect_right(node.ends, s), n - 1)  # child that receives entry
        children: list[Node] = []
        for j, child in enumerate(node.slots):
            touches = node.ends[j] > s and node.starts[j] < e
            if j == home:
                children.extend(self._store(child, s, e, entry, retired))
            elif touches:
                children.extend(self._store(child, s, e, None, retired))
            else:
                children.append(child)
        children = self._rebalance(children, retired)
        return _chunk([_as_item(c) for c in children], False)

    @staticmethod
    def _rebalance(children: list[Node], retired: list[Node]) -> list[Node]:
        """Merge underfull children into a neighbour (and re-split)."""
        out: list[Node] = []
        for child in children:
            if out and (len(child.slots) < MIN or len(out[-1].slots) < MIN) \
                    and out[-1].leaf == child.leaf:
                prev = out.pop()
                if prev not in retired:
                    retired.append(prev)
                if child not in retired:
                    retired.append(child)
                out.extend(_chunk(prev.items() + child.items(), child.leaf))
            else:
                out.append(child)
        return out

    def check(self) -> list[str]:
        """Structural invariants; returns a list of problems (empty = ok)."""
        problems: list[str] = []
        if self.root is None:
            return problems
        last_end = -1
        leaf_depths: set[int] = set()

        def visit(node: Node, depth: int) -> tuple[int, int]:
            nonlocal last_end
            if node.freed_at is not None:
                problems.append(f"tree reaches freed node {node.label()}")
            if not node.slots:
                problems.append("empty node")
                return (0, 0)
            if len(node.slots) > CAP:
                problems.append(f"node over capacity: {len(node.slots)}")
            for a, b, v in zip(node.starts, node.ends, node.slots, strict=True):
                if node.leaf:
                    if not a < b:
                        problems.append(f"empty range {a:#x}-{b:#x}")
                    if a < last_end:
                        problems.append(f"overlap or disorder at {a:#x}")
                    last_end = b
                else:
                    ca, cb = visit(v, depth + 1)
                    if (ca, cb) != (a, b):
                        problems.append(f"pivot mismatch {a:#x}-{b:#x} vs child {ca:#x}-{cb:#x}")
            if node.leaf:
                leaf_depths.add(depth)
            return node.starts[0], node.ends[-1]

        visit(self.root, 0)
        if len(leaf_depths) > 1:
            problems.append(f"leaves at different depths {sorted(leaf_depths)}")
        return problems
