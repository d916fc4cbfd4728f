"""The VMA tree (mm/vma_tree.py) against a sorted list, and the work each
operation does as the tree grows.

The reference is a sorted list of (start, end, entry); its address
searches are the linear loops the model used before the tree could search
gaps itself, so the tree must answer exactly what those loops answered.
Work is counted in nodes, never in time: every node of a built tree is
switched to a subclass that records which nodes an operation touches (reads
any field of) and which it enters (reads the slots of).
"""

from __future__ import annotations

import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import specfault as sf
from specfault.mm.vma_tree import CAP, MIN, Node, VmaTree

INF = 1 << 64


# ------------------------------------------------------------ the reference
class Ref:
    def __init__(self) -> None:
        self.items: list[tuple[int, int, Any]] = []

    def store(self, s: int, e: int, v: Any) -> None:
        out = []
        for a, b, x in self.items:
            if b <= s or a >= e:
                out.append((a, b, x))
                continue
            if a < s:
                out.append((a, s, x))
            if b > e:
                out.append((e, b, x))
        if v is not None:
            out.append((s, e, v))
        self.items = sorted(out, key=lambda t: t[0])

    def find_range(self, addr: int) -> tuple[int, int, Any] | None:
        return next((t for t in self.items if t[1] > addr), None)

    def prev(self, addr: int) -> Any:
        found = None
        for a, _, v in self.items:
            if a < addr:
                found = v
        return found

    def next(self, addr: int) -> Any:
        return next((v for a, _, v in self.items if a >= addr), None)

    def range(self, lo: int, hi: int | None) -> list[tuple[int, int, Any]]:
        return [t for t in self.items if t[1] > lo and (hi is None or t[0] < hi)]

    def topdown(self, length: int, low: int, high: int) -> int | None:
        """The model's unmapped_area_topdown() before the gap search: the
        gap's end (the caller maps at end - length), or None."""
        gap_end = high
        for start, end, _ in reversed(self.items):
            if end >= gap_end:
                gap_end = min(gap_end, start)
                continue
            if gap_end - max(end, low) >= length:
                return gap_end
            gap_end = start
            if gap_end <= low:
                return None
        return gap_end if gap_end - low >= length else None

    def bottomup(self, length: int, low: int, high: int) -> int | None:
        """The model's unmapped_area_bottomup() before the gap search."""
        gap_start = low
        for start, end, _ in self.items:
            if end <= low:
                continue
            if start - gap_start >= length and gap_start + length <= high:
                return gap_start
            gap_start = max(gap_start, end)
        return gap_start if high - gap_start >= length else None


def nodes_of(root: Node | None) -> list[Node]:
    out: list[Node] = []
    todo = [root] if root is not None else []
    while todo:
        node = todo.pop()
        out.append(node)
        if not node.leaf:
            todo.extend(node.slots)
    return out


def tree_at(root: Node | None) -> VmaTree:
    t = VmaTree()
    t.root = root
    return t


def publish(t: VmaTree, s: int, e: int, v: Any) -> None:
    """One store with what RCU relies on checked: the published version is
    not changed, nothing still reachable is retired, everything no longer
    reachable is, and nothing retired was never published."""
    old_root = t.root
    old_nodes = {id(n): n for n in nodes_of(old_root)}
    old_items = list(t.items())
    root, retired = t.store(s, e, v)
    new_ids = {id(n) for n in nodes_of(root)}
    retired_ids = [id(n) for n in retired]
    assert len(set(retired_ids)) == len(retired_ids), "a node retired twice"
    assert not new_ids & set(retired_ids), "a node still in the tree is retired"
    assert set(retired_ids) <= set(old_nodes), "a node never published is retired"
    assert set(old_nodes) - new_ids <= set(retired_ids), "an unreachable node is never freed"
    assert list(tree_at(old_root).items()) == old_items, "the published version changed"
    t.root = root


def check_fill(t: VmaTree) -> None:
    """Every node but the root holds at least MIN slots: depth stays
    O(log n)."""
    for node in nodes_of(t.root):
        if node is not t.root:
            assert len(node.slots) >= MIN, f"underfull {node.label()}: {len(node.slots)}"
    n = len(t)
    if n:
        assert t.depth() <= 1 + math.ceil(math.log(max(n, 2), MIN)), (n, t.depth())


def compare(t: VmaTree, ref: Ref, addrs: range, windows: list[tuple[int, int, int]]) -> None:
    assert t.check() == []
    check_fill(t)
    assert list(t.items()) == ref.items
    assert len(t) == len(ref.items)
    for a in addrs:
        assert t.find_range(a) == ref.find_range(a), a
        got = ref.find_range(a)
        assert t.find(a) is (got[2] if got else None), a
        assert t.prev(a) is ref.prev(a), a
        assert t.next(a) is ref.next(a), a
    for lo, hi, _ in windows:
        assert list(t.items(lo, hi)) == ref.range(lo, hi), (lo, hi)
        assert list(t.vmas(lo)) == [v for _, _, v in ref.range(lo, None)], lo
    for low, high, length in windows:
        assert t.empty_area_rev(low, high, length) == ref.topdown(length, low, high), \
            (low, high, length)
        assert t.empty_area(low, high, length) == ref.bottomup(length, low, high), \
            (low, high, length)


# ------------------------------------------------------- randomized, small
# (start, length, erase?): mostly short inserts, so trees reach two or
# three levels (CAP 16) within 0..340; erases up to 60 empty whole leaves
op = st.one_of(st.tuples(st.integers(0, 300), st.integers(1, 4), st.just(False)),
               st.tuples(st.integers(0, 300), st.integers(1, 60), st.booleans()))


@settings(max_examples=150, deadline=None)
@given(st.lists(op, min_size=60, max_size=300),
       st.lists(st.tuples(st.integers(0, 330), st.integers(0, 340), st.integers(1, 60)),
                min_size=1, max_size=8))
def test_tree_matches_sorted_list(ops: list[tuple[int, int, bool]],
                                  windows: list[tuple[int, int, int]]) -> None:
    t, ref = VmaTree(), Ref()
    addrs = range(0, 345)
    for i, (s, n, erase) in enumerate(ops):
        v = None if erase else f"v{i}"
        publish(t, s, s + n, v)
        ref.store(s, s + n, v)
    compare(t, ref, addrs, windows)


@settings(max_examples=40, deadline=None)
@given(st.lists(op, min_size=20, max_size=150))
def test_tree_matches_after_every_store(ops: list[tuple[int, int, bool]]) -> None:
    t, ref = VmaTree(), Ref()
    windows = [(0, 340, 1), (50, 250, 3), (100, 101, 1), (0, INF, 30), (200, 120, 1)]
    for i, (s, n, erase) in enumerate(ops):
        v = None if erase else f"v{i}"
        publish(t, s, s + n, v)
        ref.store(s, s + n, v)
        compare(t, ref, range(0, 345, 7), windows)


def test_tree_matches_deep_random_history() -> None:
    """A few thousand stores over a wide range: a tree four or five levels
    deep, with big erases (munmap of a region) between inserts."""
    rng = random.Random(20261202)
    t, ref = VmaTree(), Ref()
    top = 40_000
    depths = set()
    for i in range(3000):
        r = rng.random()
        if r < 0.75:
            s = rng.randrange(top)
            n = rng.randrange(1, 6)
            publish(t, s, s + n, i)
            ref.store(s, s + n, i)
        elif r < 0.97:
            s = rng.randrange(top)
            n = rng.randrange(1, 30)
            publish(t, s, s + n, None)
            ref.store(s, s + n, None)
        else:
            s = rng.randrange(top)
            n = rng.randrange(500, 8000)
            publish(t, s, s + n, None)
            ref.store(s, s + n, None)
        depths.add(t.depth())
        if i % 300 == 299:
            windows = [(rng.randrange(top), 0, rng.randrange(1, 40)) for _ in range(20)]
            windows = [(lo, lo + rng.randrange(0, 20_000), n) for lo, _, n in windows]
            compare(t, ref, range(0, top, 97), windows)
    assert max(depths) >= 3


def test_store_emptying_most_of_a_subtree_keeps_the_fill() -> None:
    """For every internal node of a four-level tree, erase all of it but
    the first and last range: the few left over must be merged into the
    neighbours, at every level down (a store that leaves a node with one
    small child must not leave that child underfull below a merge).
    The tree is persistent, so every store starts from the same version."""
    t, ref = VmaTree(), Ref()
    for i in range(3000):
        t.root, _ = t.store(4 * i, 4 * i + 2, i)
        ref.store(4 * i, 4 * i + 2, i)
    assert t.depth() >= 4
    internal = [n for n in nodes_of(t.root) if not n.leaf and n is not t.root]
    for node in internal[::3]:
        s, e = node.starts[0] + 1, node.ends[-1] - 1
        root, _ = t.store(s, e, None)
        after = tree_at(root)
        assert after.check() == []
        check_fill(after)
        want = Ref()
        want.items = list(ref.items)
        want.store(s, e, None)
        assert list(after.items()) == want.items


def test_check_reports_wrong_gap_and_count() -> None:
    t = VmaTree()
    for i in range(100):
        t.root, _ = t.store(10 * i, 10 * i + 5, i)
    assert t.check() == []
    leaf = nodes_of(t.root)[-1]
    assert leaf.leaf
    leaf.gap += 1
    assert any("gap" in p for p in t.check())
    leaf.gap -= 1
    t.root.count += 1
    assert any("count" in p for p in t.check())


# ------------------------------------------------------------ work counted
TOUCHED: set[int] = set()
ENTERED: set[int] = set()


class CountedNode(Node):
    """A Node that records every read of its fields (no slots of its own,
    so a built tree's nodes can be switched to it in place)."""

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        TOUCHED.add(id(self))
        if name == "slots":
            ENTERED.add(id(self))
        return object.__getattribute__(self, name)


def count_nodes(root: Node | None) -> None:
    for node in nodes_of(root):
        node.__class__ = CountedNode


def work(fn: Any, *args: Any) -> tuple[int, int]:
    """(nodes entered, nodes touched) by ``fn(*args)``."""
    TOUCHED.clear()
    ENTERED.clear()
    fn(*args)
    return len(ENTERED), len(TOUCHED)


def big_tree(n: int, page: int) -> tuple[VmaTree, int, int]:
    """n one-page ranges, each followed by a one-page gap, but for a hole of
    81 pages three quarters of the way up: the only gap of 64 pages between
    two ranges.  Returns the tree, the start of range n // 2 and of the
    hole."""
    t = VmaTree()
    base = 1 << 32
    for i in range(n):
        a = base + 2 * i * page
        t.root, _ = t.store(a, a + page, i)
    hole = base + 2 * (3 * n // 4) * page - page
    t.root, _ = t.store(hole + page, hole + 81 * page, None)
    return t, base + 2 * (n // 2) * page, hole


def test_tree_operations_touch_o_depth_nodes() -> None:
    """At 10,000 VMAs (over 1,000 nodes) every operation enters a handful
    of nodes per level, and touches at most CAP per node it enters."""
    n, page = 10_000, 4096
    t, mid, hole = big_tree(n, page)
    base, end = 1 << 32, (1 << 32) + 2 * n * page
    nodes = len(nodes_of(t.root))
    d = t.depth()
    assert nodes > 1000 and d >= 4
    # the answers first
    assert t.empty_area_rev(base, end, 64 * page) == hole + 81 * page
    assert t.empty_area(base, end, 64 * page) == hole
    assert t.empty_area_rev(base, hole + 60 * page, 64 * page) is None
    assert t.prev(mid) is t.find(mid - 2 * page)
    count_nodes(t.root)
    cases = {
        "find": (t.find, mid),
        "prev": (t.prev, mid),
        "next": (t.next, mid + 1),
        "items(lo, hi) of 3": (lambda lo, hi: list(t.items(lo, hi)), mid, mid + 6 * page),
        "empty_area_rev of the hole": (t.empty_area_rev, base, end, 64 * page),
        "empty_area_rev under the hole": (t.empty_area_rev, base, hole, 64 * page),
        "empty_area_rev of one page": (t.empty_area_rev, base, mid, page),
        "empty_area of the hole": (t.empty_area, base, end, 64 * page),
        "empty_area above the hole": (t.empty_area, hole + 81 * page, end, 2 * page),
        "store (insert in a gap)": (t.store, mid + page, mid + 2 * page, "x"),
        "store (erase)": (t.store, mid, mid + page, None),
        "store (split)": (t.store, mid + page // 2, mid + page, "y"),
    }
    for what, (fn, *args) in cases.items():
        entered, touched = work(fn, *args)
        assert entered <= 3 * d + 2, f"{what}: entered {entered} nodes (depth {d})"
        assert touched <= CAP * (3 * d + 2), f"{what}: touched {touched} of {nodes} nodes"
    assert work(len, t) == (0, 1)


def test_syscalls_touch_o_depth_nodes() -> None:
    """Through the API, at 2,000 VMAs: mmap (the top-down gap search),
    munmap (its victims, prev, next), mprotect split and merge, and a
    write fault on a new VMA each enter O(depth) nodes of the tree."""
    page = 4096
    rw, r = sf.PROT_READ | sf.PROT_WRITE, sf.PROT_READ
    anon = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS
    m = sf.Machine(nr_frames=256)
    p = m.spawn()
    starts = [p.mmap(0, 3 * page, r if i % 2 else rw, anon) for i in range(2000)]
    tree = p.mm.mm_mt
    assert len(tree) == 2000
    mid, prot = starts[1000], rw

    def mmap_munmap() -> None:
        a = p.mmap(0, page, sf.PROT_READ | sf.PROT_EXEC, anon)
        p.munmap(a, page)

    def mprotect() -> None:
        p.mprotect(mid + page, page, sf.PROT_READ | sf.PROT_EXEC)
        p.mprotect(mid + page, page, prot)

    def fault() -> None:
        a = p.mmap(0, page, rw | sf.PROT_EXEC, anon)
        p.write(a, b"x")
        p.munmap(a, page)

    for fn in (mmap_munmap, mprotect, fault):
        d = tree.depth()
        count_nodes(tree.root)
        entered, touched = work(fn)
        assert entered <= 12 * d, f"{fn.__name__}: entered {entered} nodes (depth {d})"
        assert touched <= CAP * 12 * d, f"{fn.__name__}: touched {touched} nodes"
    m.check()
