"""Exhaustive depth-first search with a preemption bound, and sleep sets.

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
non-preemptive default (keep the last actor, else the lowest-numbered);
afterwards the deepest node with an untried alternative is advanced.

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

from itertools import chain

from specfault.check.engine import STOP, Chooser, Execution
from specfault.check.independence import Footprint, dependent, footprint_of
from specfault.check.schedule import ScheduleError


class _Node:
    """One step of the current path.  ``sleep`` and ``done`` are actor sets
    (fixed across re-executions); their footprints are recomputed in the
    execution at hand (``cur``), because each execution builds fresh objects."""

    __slots__ = ("enabled", "choice", "fp", "done", "sleep", "prev", "pre", "cur")

    def __init__(self, enabled: list[int], prev: int, pre: int, sleep: set[int]) -> None:
        self.enabled = enabled
        self.prev = prev
        self.pre = pre            # preemptions before this step
        self.sleep = sleep        # actors asleep here
        self.done: set[int] = set()
        self.choice = -1
        self.fp: Footprint = None
        self.cur: dict[int, Footprint] = {}


class Dfs:
    name = "dfs"

    def __init__(self, max_preemptions: int | None = None, reduction: str = "auto") -> None:
        if reduction not in ("auto", "sleep", "none"):
            raise ValueError(f"dfs: unknown reduction {reduction!r}")
        if reduction == "auto":
            reduction = "sleep" if max_preemptions is None else "none"
        self.bound = max_preemptions
        self.reduce = reduction == "sleep"
        self.reduction = reduction
        self.stack: list[_Node] = []
        self._exhausted = False
        self.complete = 0       # executions run to the end
        self.pruned = 0         # sleep-set blocked
        self.bounded = 0        # alternatives cut by the preemption bound

    # -- candidate order at a node --
    def _candidates(self, node: _Node) -> list[int]:
        out = []
        prev_runs = node.prev in node.enabled
        if prev_runs:
            out.append(node.prev)
        for a in node.enabled:
            if a != node.prev:
                out.append(a)
        return out

    def _allowed(self, node: _Node, a: int) -> bool:
        if a in node.done or a in node.sleep:
            return False
        if self.bound is not None and a != node.prev and node.prev in node.enabled \
                and node.pre + 1 > self.bound:
            self.bounded += 1
            return False
        return True

    def _child_sleep(self, parent: _Node) -> set[int]:
        if not self.reduce:
            return set()
        pfp, cur = parent.fp, parent.cur
        return {a for a in chain(parent.sleep, parent.done)
                if a != parent.choice and not dependent(cur[a], pfp)}

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
        depth = [0]
        reduce = self.reduce

        def choose(ex: Execution, enabled: list[int]) -> int:
            d = depth[0]
            depth[0] = d + 1
            if d < len(stack):
                node = stack[d]
                if node.choice not in enabled:
                    raise ScheduleError(f"dfs: scenario {ex.scenario.name!r} is not deterministic: "
                                        f"actor {node.choice} cannot run at step {d} on re-execution")
                if reduce and d == len(stack) - 1:
                    self._measure(ex, node)
                return node.choice
            sleep = self._child_sleep(stack[d - 1]) if d else set()
            node = _Node(list(enabled), ex.prev, ex.preemptions, sleep)
            for a in self._candidates(node):
                if self._allowed(node, a):
                    node.choice = a
                    break
            else:
                depth[0] = d
                return STOP
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
            for a in self._candidates(node):
                if self._allowed(node, a):
                    node.choice = a
                    return
            stack.pop()
        self._exhausted = True

    def exhausted(self) -> bool:
        return self._exhausted
