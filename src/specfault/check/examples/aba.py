"""ABA on a lock-free (Treiber) stack.

``pop`` reads ``top`` = A and ``A.next`` = B, then ``cmpxchg(top, A, B)``.
If meanwhile another thread popped A and B and pushed A back, ``top`` is A
again and the cmpxchg succeeds — installing B, which that thread now owns.
Broken: the cmpxchg compares the pointer only.  Correct: ``top`` carries a
tag that every successful update increments (a "counted pointer"), so the
stale cmpxchg fails.
"""

from __future__ import annotations

from typing import Any

from specfault.check.api import Shared, check, join, program, spawn


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.next = Shared(f"{name}.next", None)

    def __repr__(self) -> str:
        return self.name


async def _run(tagged: bool) -> None:
    a, b, c = Node("A"), Node("B"), Node("C")
    a.next.value, b.next.value = b, c
    top = Shared("top", (a, 0) if tagged else a)

    def ptr(v: Any) -> Node | None:
        return v[0] if tagged else v

    async def pop() -> Node | None:
        while True:
            old = await top.load()
            node = ptr(old)
            if node is None:
                return None
            nxt = await node.next.load()
            new = (nxt, old[1] + 1) if tagged else nxt
            if await top.cmpxchg(old, new) == old:
                return node

    async def push(node: Node) -> None:
        while True:
            old = await top.load()
            await node.next.store(ptr(old))
            new = (node, old[1] + 1) if tagged else node
            if await top.cmpxchg(old, new) == old:
                return

    async def popper() -> Node | None:
        return await pop()

    async def recycler() -> Node | None:
        x = await pop()
        y = await pop()
        assert x is not None
        await push(x)              # x (A) goes back: top is A again
        return y                   # y (B) is ours now

    t1 = await spawn(popper, name="popper")
    t2 = await spawn(recycler, name="recycler")
    got1 = await join(t1)
    got2 = await join(t2)
    on_stack: list[Node] = []
    node = ptr(top.value)
    while node is not None and len(on_stack) < 5:
        on_stack.append(node)
        node = node.next.value
    owned = [n for n in (got1, got2) if n is not None]
    for n in owned:
        check(n not in on_stack, f"{n} is on the stack {on_stack} and owned by a thread "
                                 f"(popper got {got1}, recycler got {got2})")
    check(sorted(map(repr, on_stack + owned)) == ["A", "B", "C"],
          f"nodes lost or duplicated: stack {on_stack}, popped {owned}")


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
