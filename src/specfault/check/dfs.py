"""Exhaustive depth-first search: bounded (iteratively), or unbounded with sleep sets.

M. Musuvathi, S. Qadeer, "Iterative Context Bounding for Systematic Testing
of Multithreaded Programs", PLDI 2007 (CHESS): most concurrency bugs need
few *preemptions* (switching away from an actor that could have gone on), so
exploring every schedule with at most ``c`` preemptions covers them at a
cost polynomial in the run's length.

P. Godefroid, "Partial-Order Methods for the Verification of Concurrent
Systems", LNCS 1032, 1996 (sleep sets; see also Flanagan & Godefroid,
"Dynamic Partial-Order Reduction for Model Checking Software", POPL 2005):
after exploring step ``t`` from a state, a later sibling branch need not
start with ``t`` again while only steps independent of ``t`` run (their
orders commute) — ``t`` *sleeps* there.  An execution whose every runnable
actor sleeps is abandoned (*sleep-set blocked*): an equivalent one was run.
Independence comes from the ops' footprints (:mod:`.independence`).

The search is stateless (CHESS-style): each execution re-runs the scenario
from its setup, replaying the stack's choices, then extends it with the
default choice (keep the last actor, else the lowest-numbered); afterwards
the deepest node with an untried alternative is advanced.

The order of a bounded search
-----------------------------
A plain depth-first search advances the *deepest* node first, so the
alternatives at the first steps — a bug that needs a context switch at
step 1 — come last, after every schedule that keeps the first steps.  A
bounded search (``Dfs(c)``) therefore runs by *iterative bounding*
(:class:`Iterative`, CHESS's iterative context bounding):

1. bound 0: the depth-first search of every schedule without a preemption;
   every alternative that would exceed the bound is not dropped but
   *spilled* — its schedule prefix (the choices up to that node, then the
   alternative) is queued for the bound it costs;
2. bound ``b`` = the smallest bound with queued prefixes: each prefix, in
   the order it was queued (earlier switches first), is the root of a
   depth-first search of the schedules that extend it within bound ``b``;
   its own over-budget alternatives are spilled in turn;
3. until the queues are empty (every schedule explored: ``exhausted``) or
   the next bound exceeds ``c``.

Every schedule with ``b`` preemptions is explored exactly once, in the
search of the prefix that ends with its ``b``-th preemption; none is run
twice.  So ``Dfs(c)`` runs the same schedules as a plain bounded search,
all of those with fewer preemptions first.  The cost kind is pluggable:
preemptions here and in :mod:`.ipb` (which has no upper bound), delays in
:mod:`.delay`.  The queued prefixes are kept as ``array('H')``: 2 bytes a
step, at most one per alternative cut by the bound.

Soundness
---------
Without a preemption bound, sleep sets preserve every reachable state and
every final state (tested: same set of final observations as plain search).
With a bound they do not in general (Coons, Musuvathi, McKinley, "Bounded
Partial-Order Reduction", OOPSLA 2013: the representative kept may need
more preemptions than the one pruned), so ``reduction="auto"`` uses sleep
sets only when the search is unbounded.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Sequence
from itertools import chain

from specfault.check.engine import STOP, Chooser, Execution
from specfault.check.independence import Footprint, dependent, footprint_of
from specfault.check.schedule import ScheduleError

#: spill(choices, cost): a schedule prefix whose last choice exceeded the bound
Spill = Callable[[Sequence[int], int], None]


class Cost:
    """How a bounded search orders a node's candidates and what each costs.

    ``order(prev, enabled)`` lists the candidates, the default first;
    ``cost(prev, enabled, rank, actor)`` is what choosing the one at ``rank``
    adds to the schedule's cost."""

    name = "preemptions"

    def order(self, prev: int, enabled: list[int]) -> list[int]:
        if prev in enabled:
            return [prev] + [a for a in enabled if a != prev]
        return list(enabled)

    def cost(self, prev: int, enabled: list[int], rank: int, actor: int) -> int:
        return 1 if actor != prev and prev in enabled else 0


PREEMPTIONS = Cost()


class _Node:
    """One step of the current path.  ``sleep`` and ``done`` are actor sets
    (fixed across re-executions); their footprints are recomputed in the
    execution at hand (``cur``), because each execution builds fresh objects."""

    __slots__ = ("enabled", "choice", "fp", "done", "sleep", "todo", "spent", "costs", "cur")

    def __init__(self, enabled: list[int], spent: int, sleep: set[int]) -> None:
        self.enabled = enabled
        self.spent = spent        # cost (preemptions, delays) before this step
        self.sleep = sleep        # actors asleep here
        self.done: set[int] = set()
        self.todo: list[int] = []     # candidates within the bound, not yet tried (reversed)
        self.costs: dict[int, int] = {}
        self.choice = -1
        self.fp: Footprint = None
        self.cur: dict[int, Footprint] = {}


class Search:
    """The stateless depth-first search of the schedules that extend
    ``prefix`` (whose cost is ``spent``) within ``bound`` (None: unbounded).
    Alternatives over the bound go to ``spill`` (or are only counted)."""

    name = "dfs"

    def __init__(self, bound: int | None = None, reduction: str = "auto", prefix: Sequence[int] = (),
                 spent: int = 0, spill: Spill | None = None, cost: Cost = PREEMPTIONS) -> None:
        if reduction not in ("auto", "sleep", "none"):
            raise ValueError(f"dfs: unknown reduction {reduction!r}")
        if reduction == "auto":
            reduction = "sleep" if bound is None else "none"
        self.bound = bound
        self.reduce = reduction == "sleep"
        self.reduction = reduction
        self.prefix = prefix
        self.spent0 = spent
        self.spill = spill
        self.cost = cost
        self.stack: list[_Node] = []
        self._exhausted = False
        self.complete = 0       # executions run to the end
        self.pruned = 0         # sleep-set blocked
        self.bounded = 0        # alternatives cut by the bound

    def _child_sleep(self, parent: _Node) -> set[int]:
        if not self.reduce:
            return set()
        pfp, cur = parent.fp, parent.cur
        return {a for a in chain(parent.sleep, parent.done)
                if a != parent.choice and not dependent(cur[a], pfp)}

    def _expand(self, ex: Execution, node: _Node) -> None:
        """The node's candidates within the bound (default first); the
        others are spilled."""
        bound, cost = self.bound, self.cost
        prev, enabled = ex.prev, node.enabled
        keep = []
        for rank, a in enumerate(cost.order(prev, enabled)):
            if a in node.sleep:
                continue
            c = cost.cost(prev, enabled, rank, a)
            if bound is not None and node.spent + c > bound:
                self.bounded += 1
                if self.spill is not None:
                    self.spill((*ex.choices, a), node.spent + c)
                continue
            node.costs[a] = c
            keep.append(a)
        keep.reverse()
        node.todo = keep

    @staticmethod
    def _measure(ex: Execution, node: _Node) -> None:
        """Footprints, in this execution, of the node's choice and of every
        actor asleep or done there (all are pending ops at this point)."""
        node.fp = footprint_of(ex, node.choice)
        node.cur = {a: footprint_of(ex, a) for a in chain(node.sleep, node.done)}

    def next(self) -> tuple[int, Chooser] | None:
        if self._exhausted:
            return None
        stack = self.stack
        prefix = self.prefix
        base = len(prefix)
        depth = [0]
        reduce = self.reduce

        def choose(ex: Execution, enabled: list[int]) -> int:
            d = depth[0]
            depth[0] = d + 1
            if d < base:
                c = prefix[d]
                if c not in enabled:
                    raise ScheduleError(f"dfs: scenario {ex.scenario.name!r} is not deterministic: "
                                        f"actor {c} cannot run at step {d} on re-execution")
                return c
            k = d - base
            if k < len(stack):
                node = stack[k]
                if node.choice not in enabled:
                    raise ScheduleError(f"dfs: scenario {ex.scenario.name!r} is not deterministic: "
                                        f"actor {node.choice} cannot run at step {d} on re-execution")
                if reduce and k == len(stack) - 1:
                    self._measure(ex, node)
                return node.choice
            if k:
                parent = stack[k - 1]
                node = _Node(list(enabled), parent.spent + parent.costs[parent.choice],
                             self._child_sleep(parent))
            else:
                node = _Node(list(enabled), self.spent0, set())
            self._expand(ex, node)
            if not node.todo:
                depth[0] = d
                return STOP
            node.choice = node.todo.pop()
            if reduce:
                self._measure(ex, node)
            stack.append(node)
            return node.choice

        return 0, choose

    def done_with(self, ex: Execution) -> None:
        if ex.pruned:
            self.pruned += 1
        else:
            self.complete += 1
        stack = self.stack
        while stack:
            node = stack[-1]
            node.done.add(node.choice)
            if node.todo:
                node.choice = node.todo.pop()
                return
            stack.pop()
        self._exhausted = True

    def exhausted(self) -> bool:
        return self._exhausted


class Iterative:
    """Iterative bounding (see the module doc): bound 0, then each queued
    prefix of the next bound, ... up to ``max_bound`` (None: until every
    schedule has been explored)."""

    name = "ipb"

    def __init__(self, cost: Cost = PREEMPTIONS, max_bound: int | None = None) -> None:
        self.cost = cost
        self.max_bound = max_bound
        self.queues: dict[int, deque[array]] = {}
        self.bound = 0                 # the bound being explored
        self.current: Search | None = Search(0, "none", (), 0, self._spill, cost)
        self.complete = 0
        self.pruned = 0
        self._bounded = 0              # alternatives beyond max_bound
        self.per_bound: dict[int, int] = {}    # schedules run at each bound

    def _spill(self, choices: Sequence[int], cost: int) -> None:
        if self.max_bound is not None and cost > self.max_bound:
            self._bounded += 1
            return
        self.queues.setdefault(cost, deque()).append(array("H", choices))

    @property
    def bounded(self) -> int:
        """Alternatives cut by the largest bound (never explored)."""
        return self._bounded

    def next(self) -> tuple[int, Chooser] | None:
        while True:
            cur = self.current
            if cur is not None:
                nxt = cur.next()
                if nxt is not None:
                    return self.bound, nxt[1]
                self.current = None
            if not self.queues:
                return None
            bound = min(self.queues)
            queue = self.queues[bound]
            prefix = queue.popleft()
            if not queue:
                del self.queues[bound]
            self.bound = bound
            self.current = Search(bound, "none", prefix, bound, self._spill, self.cost)

    def done_with(self, ex: Execution) -> None:
        cur = self.current
        assert cur is not None
        cur.done_with(ex)
        if ex.pruned:
            self.pruned += 1
        else:
            self.complete += 1
        self.per_bound[self.bound] = self.per_bound.get(self.bound, 0) + 1

    def exhausted(self) -> bool:
        return not self.queues and (self.current is None or self.current.exhausted())


class Dfs:
    """Strategy ``dfs``: with a preemption bound, iterative bounding up to
    it (every schedule with at most ``max_preemptions``, fewest first);
    unbounded, one depth-first search, with sleep sets unless
    ``reduction="none"``."""

    name = "dfs"

    def __init__(self, max_preemptions: int | None = None, reduction: str = "auto") -> None:
        if reduction not in ("auto", "sleep", "none"):
            raise ValueError(f"dfs: unknown reduction {reduction!r}")
        if reduction == "auto":
            reduction = "sleep" if max_preemptions is None else "none"
        self.bound = max_preemptions
        self.reduction = reduction
        self.impl: Search | Iterative
        if max_preemptions is None or reduction == "sleep":
            self.impl = Search(max_preemptions, reduction)
        else:
            self.impl = Iterative(PREEMPTIONS, max_preemptions)

    @property
    def complete(self) -> int:
        return self.impl.complete

    @property
    def pruned(self) -> int:
        return self.impl.pruned

    @property
    def bounded(self) -> int:
        return self.impl.bounded

    def next(self) -> tuple[int, Chooser] | None:
        nxt = self.impl.next()
        return None if nxt is None else (0, nxt[1])

    def done_with(self, ex: Execution) -> None:
        self.impl.done_with(ex)

    def exhausted(self) -> bool:
        return self.impl.exhausted()
