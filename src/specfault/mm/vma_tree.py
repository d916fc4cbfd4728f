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

Only non-empty ranges are stored; gaps are implicit.  Every node knows the
largest gap between consecutive ranges below it (the maple tree's
``maple_arange_64`` keeps the same figure per slot, ``gap[]``, kept by
``mas_update_gap()``) and how many ranges it holds, so the free-area
search and the count need not look at every VMA.

What each operation costs
-------------------------
Every node but the root holds at least ``MIN`` slots (a store merges any
node it leaves underfull into a neighbour, at every level it touched), so
for ``n`` VMAs the depth is ``d <= 1 + log_MIN(n)`` — 4 at 10,000 VMAs
mapped one after another (nodes split half full, about 9 slots).  With
``k`` the VMAs an operation reports or removes, it touches:

    find / find_range   O(d) nodes         find_vma(), mas_walk()
    prev / next         O(d)               vma_prev(), vma_next()
    items / vmas(lo,hi) O(d + k)           for_each_vma_range(): a lazy walk
    len                 O(1)               the root's count (mm->map_count)
    empty_area_rev      O(CAP * d)         mas_empty_area_rev(): the highest gap
    empty_area          O(CAP * d)         mas_empty_area(): the lowest gap
    store               O(CAP * d + k)     mas_store_gfp(): path copying
    depth               O(d)
    check               O(n)               mt_validate(): debug only, never
                                           on a syscall path

The gap searches (after ``mas_rev_awalk()``/``mas_awalk()``, which skip a
slot whose ``gap[]`` is too small) enter at most the two paths to the nodes
straddling ``low`` and ``high`` — whose recorded gap may lie outside the
window — plus one path down into the first node wholly inside the window
whose recorded gap fits: such a gap is an answer.
tests/mm/test_vma_tree.py counts the nodes each operation touches at
10,000 VMAs; benchmarks/bench_vma_ops.py times the syscalls.

Fields
------
Node (immutable once published)
    leaf     True for leaves (slots are VMAs), False for internal nodes
    starts   per slot: start of the range (internal: min start of the child)
    ends     per slot: end of the range (internal: max end of the child)
    slots    VMAs or child nodes
    gap      largest start[i+1] - end[i] between consecutive ranges in the
             subtree (0 with fewer than two)
    count    ranges (VMAs) in the subtree
VmaTree
# protected by mmap_lock (write) for writers; readers: rcu_dereference
    root     the current root node, or None when empty
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import islice
from operator import sub
from typing import Any

from specfault.runtime import KObject

CAP = 16          # slots per node (maple_range_64 has 16)
MIN = CAP // 4    # fewer than this and a node is merged with a sibling


class Node(KObject):
    __slots__ = ("leaf", "starts", "ends", "slots", "gap", "count")

    def __init__(self, leaf: bool, starts: list[int], ends: list[int], slots: list[Any]) -> None:
        super().__init__()
        self.leaf = leaf
        self.starts = starts
        self.ends = ends
        self.slots = slots
        gap = 0
        last = ends[0] if ends else 0
        for i in range(1, len(starts)):       # plain loops: faster than map() at 16
            if starts[i] - last > gap:
                gap = starts[i] - last
            last = ends[i]
        if leaf:
            self.count = len(slots)
        else:
            count = 0
            for child in slots:
                count += child.count
                if child.gap > gap:
                    gap = child.gap
            self.count = count
        self.gap = gap

    def label(self) -> str:
        return f"maple node {'leaf' if self.leaf else 'internal'} [{self.starts[0]:#x}.." \
               f"{self.ends[-1]:#x})" if self.starts else "maple node (empty)"


class VmaTree:
    """``mm->mm_mt``.  Writer methods return the nodes they replaced; the
    caller retires them through RCU once the new root is published.

    Readers here (everything but :meth:`store`) walk whatever root is
    current when they start, without ops: the caller holds ``mmap_lock``
    (the lockless walk is ``find_vma_rcu`` in mm/fault.py).  A caller that
    changes the tree while iterating :meth:`items` keeps walking the old
    version — collect what you will change first."""

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

    def prev(self, addr: int) -> Any:
        """vma_prev() from ``addr``: the last VMA with start < addr, or None.
        One descent: slot i of a node is the last whose start is below
        addr, so the answer is in child i."""
        node = self.root
        while node is not None:
            i = bisect_left(node.starts, addr) - 1
            if i < 0:
                return None
            if node.leaf:
                return node.slots[i]
            node = node.slots[i]
        return None

    def next(self, addr: int) -> Any:
        """vma_next() from ``addr``: the first VMA with start >= addr, or
        None.  At most two descents: find(addr), and if that VMA contains
        addr, the one after it (find from its end)."""
        got = self.find_range(addr)
        if got is None:
            return None
        start, end, vma = got
        return vma if start >= addr else self.find(end)

    def items(self, lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, int, Any]]:
        """for_each_vma_range(): (start, end, vma) in address order for every
        range with end > lo and start < hi (no upper bound when hi is
        None).  Lazy: O(depth) to the first, then O(1) amortised each."""
        root = self.root
        if root is None:
            return
        stack = [(root, bisect_right(root.ends, lo))]
        while stack:
            node, i = stack.pop()
            slots = node.slots
            if i >= len(slots):
                continue
            if node.leaf:
                starts, ends = node.starts, node.ends
                for j in range(i, len(slots)):
                    if hi is not None and starts[j] >= hi:
                        return
                    yield starts[j], ends[j], slots[j]
                continue
            stack.append((node, i + 1))
            child = slots[i]
            stack.append((child, bisect_right(child.ends, lo)))

    def vmas(self, lo: int = 0, hi: int | None = None) -> Iterator[Any]:
        """The VMAs of :meth:`items` (for_each_vma_range)."""
        for _, _, vma in self.items(lo, hi):
            yield vma

    def __len__(self) -> int:
        """How many ranges the tree holds: the root's count, O(1)."""
        return self.root.count if self.root is not None else 0

    def depth(self) -> int:
        d, node = 0, self.root
        while node is not None:
            d += 1
            node = None if node.leaf else node.slots[0]
        return d

    # ------------------------------------------------------------ gap search
    def empty_area_rev(self, low: int, high: int, length: int) -> int | None:
        """mas_empty_area_rev(): the highest gap with at least ``length``
        bytes inside [low, high), counting the space below the first VMA
        and above the last.  Returns that gap's end clipped to ``high``
        (the caller maps at end - length), or None.  Nodes whose recorded
        gap is too small, or whose span misses the window, are skipped
        whole (as mas_rev_awalk() skips slots by gap[])."""
        if length <= 0:
            raise ValueError(f"VmaTree.empty_area_rev: length {length}")
        if high - low < length:
            return None
        root = self.root
        if root is None:
            return high
        if high - max(root.ends[-1], low) >= length:         # above the last VMA
            return high
        got = _rev_awalk(root, low, high, length)
        if got is not None:
            return got
        top = min(root.starts[0], high)                        # below the first VMA
        return top if top - low >= length else None

    def empty_area(self, low: int, high: int, length: int) -> int | None:
        """mas_empty_area(): the lowest gap with at least ``length`` bytes
        inside [low, high).  Returns its start clipped to ``low``, or None."""
        if length <= 0:
            raise ValueError(f"VmaTree.empty_area: length {length}")
        if high - low < length:
            return None
        root = self.root
        if root is None:
            return low
        if min(root.starts[0], high) - low >= length:          # below the first VMA
            return low
        got = _awalk(root, low, high, length)
        if got is not None:
            return got
        bottom = max(root.ends[-1], low)                       # above the last VMA
        return bottom if high - bottom >= length else None

    # ----------------------------------------------------------------- write
    def store(self, start: int, end: int, entry: Any) -> tuple[Node | None, list[Node]]:
        """mas_store(): map [start, end) to ``entry`` (None erases), trimming
        whatever overlapped.  Returns (new root, replaced nodes); the caller
        publishes the root (one store) and retires the replaced nodes.
        Copies the path to [start, end) and the nodes it overlaps; each
        copied node is rebuilt from at most 2 * CAP slots."""
        if start >= end:
            raise ValueError(f"VmaTree.store: empty range {start:#x}-{end:#x}")
        w = _Writer()
        if self.root is None:
            nodes = w.chunk(True, [start], [end], [entry]) if entry is not None else []
        else:
            nodes = w.store(self.root, start, end, entry)
        while len(nodes) > 1:
            nodes = w.parents(nodes)
        root = nodes[0] if nodes else None
        while root is not None and not root.leaf and len(root.slots) == 1:
            w.retire(root)                # a single-child root gives way to its child
            root = root.slots[0]
        return root, w.retired

    # ----------------------------------------------------------------- debug
    def check(self) -> list[str]:
        """Structural invariants; returns a list of problems (empty = ok).
        O(n): for check_mm, never on a syscall path."""
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
            if depth and len(node.slots) < MIN:
                problems.append(f"{node.label()}: underfull, {len(node.slots)} slots")
            if not len(node.starts) == len(node.ends) == len(node.slots):
                problems.append(f"{node.label()}: starts/ends/slots lengths differ")
            gap = max(map(sub, islice(node.starts, 1, None), node.ends), default=0)
            count = len(node.slots) if node.leaf else 0
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
                    gap = max(gap, v.gap)
                    count += v.count
            if node.gap != gap:
                problems.append(f"{node.label()}: gap {node.gap:#x}, subtree has {gap:#x}")
            if node.count != count:
                problems.append(f"{node.label()}: count {node.count}, subtree has {count}")
            if node.leaf:
                leaf_depths.add(depth)
            return node.starts[0], node.ends[-1]

        visit(self.root, 0)
        if len(leaf_depths) > 1:
            problems.append(f"leaves at different depths {sorted(leaf_depths)}")
        return problems


# ------------------------------------------------------------- gap walks
def _rev_awalk(node: Node, low: int, high: int, length: int) -> int | None:
    """The highest gap between two ranges of ``node``'s subtree that holds
    ``length`` bytes of [low, high); its end clipped to high, or None."""
    if node.gap < length or min(node.ends[-1], high) - max(node.starts[0], low) < length:
        return None
    starts, ends, slots, leaf = node.starts, node.ends, node.slots, node.leaf
    for j in range(len(slots) - 1, -1, -1):
        if not leaf:
            got = _rev_awalk(slots[j], low, high, length)
            if got is not None:
                return got
        if j:
            top = min(starts[j], high)
            if top <= low:
                return None
            if top - max(ends[j - 1], low) >= length:
                return top
    return None


def _awalk(node: Node, low: int, high: int, length: int) -> int | None:
    """The lowest gap between two ranges of ``node``'s subtree that holds
    ``length`` bytes of [low, high); its start clipped to low, or None."""
    if node.gap < length or min(node.ends[-1], high) - max(node.starts[0], low) < length:
        return None
    starts, ends, slots, leaf = node.starts, node.ends, node.slots, node.leaf
    n = len(slots)
    for j in range(n):
        if not leaf:
            got = _awalk(slots[j], low, high, length)
            if got is not None:
                return got
        if j + 1 < n:
            bottom = max(ends[j], low)
            if bottom >= high:
                return None
            if min(starts[j + 1], high) - bottom >= length:
                return bottom
    return None


# ----------------------------------------------------------- path copying
class _Writer:
    """One store: the nodes it built (``fresh``: never published, so never
    retired) and the published nodes it replaced (``retired``).

    Invariant kept (B-tree fill): every node but the root holds at least MIN
    slots.  Only fresh nodes can be underfull, so only they are looked at;
    a published sibling is read only when a fresh neighbour merges into
    it."""

    __slots__ = ("fresh", "retired")

    def __init__(self) -> None:
        self.fresh: set[int] = set()
        self.retired: list[Node] = []

    def retire(self, node: Node) -> None:
        if id(node) not in self.fresh:
            self.retired.append(node)

    def chunk(self, leaf: bool, starts: list[int], ends: list[int],
              slots: list[Any]) -> list[Node]:
        """Fresh nodes over parallel lists: as few as fit CAP, sizes as even
        as possible (so each of several holds at least CAP // 2)."""
        n = len(slots)
        if n <= CAP:
            nodes = [Node(leaf, starts, ends, slots)] if n else []
        else:
            k = -(-n // CAP)
            nodes = []
            for i in range(k):
                a, b = i * n // k, (i + 1) * n // k
                nodes.append(Node(leaf, starts[a:b], ends[a:b], slots[a:b]))
        self.fresh.update(map(id, nodes))
        return nodes

    def parents(self, children: list[Node]) -> list[Node]:
        """Internal nodes over ``children`` (all of one height)."""
        return self.chunk(False, [c.starts[0] for c in children],
                          [c.ends[-1] for c in children], children)

    def store(self, node: Node, s: int, e: int, entry: Any) -> list[Node]:
        """Replace published ``node`` (which the store touches) by fresh
        nodes of the same height holding its ranges with [s, e) mapped to
        ``entry``: at least MIN slots each, unless there is only one."""
        self.retired.append(node)
        starts, ends, slots = node.starts, node.ends, node.slots
        if node.leaf:
            # ranges i..j-1 overlap [s, e): the first is kept below s, the
            # last above e; the entry goes between
            i = bisect_right(ends, s)
            j = bisect_left(starts, e)
            ms: list[int] = []
            me: list[int] = []
            mv: list[Any] = []
            if i < j and starts[i] < s:
                ms.append(starts[i])
                me.append(s)
                mv.append(slots[i])
            if entry is not None:
                ms.append(s)
                me.append(e)
                mv.append(entry)
            if i < j and ends[j - 1] > e:
                ms.append(e)
                me.append(ends[j - 1])
                mv.append(slots[j - 1])
            return self.chunk(True, starts[:i] + ms + starts[j:], ends[:i] + me + ends[j:],
                              slots[:i] + mv + slots[j:])
        # children lo..hi are replaced: those [s, e) overlaps, and the one
        # that receives the entry (the first ending above s) even if it only
        # abuts
        n = len(slots)
        first = bisect_right(ends, s)               # first child ending above s
        last = bisect_left(starts, e) - 1           # last child starting below e
        home = min(first, n - 1)
        lo, hi = min(first, home), max(last, home)
        fresh: list[Node] = []
        for j in range(lo, hi + 1):
            fresh += self.store(slots[j], s, e, entry if j == home else None)
        children = slots[:lo] + fresh + slots[hi + 1:]
        for f in fresh:
            if len(f.slots) < MIN:
                return self.parents(self.fix(children))
        # the usual case: the pivots of the copied children spliced in
        return self.chunk(False, starts[:lo] + [f.starts[0] for f in fresh] + starts[hi + 1:],
                          ends[:lo] + [f.ends[-1] for f in fresh] + ends[hi + 1:], children)

    def small(self, node: Node) -> bool:
        return id(node) in self.fresh and len(node.slots) < MIN

    def fix(self, children: list[Node]) -> list[Node]:
        """Merge each underfull (fresh) child into a neighbour and re-split,
        so that every node returned holds at least MIN slots, unless there
        is only one."""
        out: list[Node] = []
        for child in children:
            out.append(child)
            while len(out) >= 2 and (self.small(out[-1]) or self.small(out[-2])):
                right = out.pop()
                left = out.pop()
                out += self.merge(left, right)
        return out

    def merge(self, left: Node, right: Node) -> list[Node]:
        """Two neighbours' slots in as few nodes as fit.  Merged internal
        nodes bring their children together, which may be underfull too (a
        store that emptied a whole subtree): those are fixed one level
        down."""
        self.retire(left)
        self.retire(right)
        if left.leaf:
            return self.chunk(True, left.starts + right.starts, left.ends + right.ends,
                              left.slots + right.slots)
        return self.parents(self.fix(left.slots + right.slots))
