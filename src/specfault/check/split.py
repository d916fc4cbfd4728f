"""Exploration as campaign units (``check/campaign.py``): one per scenario,
and one search split into pieces.

What a unit may depend on
-------------------------
A unit's result must not depend on what ran before it in the same process,
or it would differ between one process and many.  The model numbers its
``mm_struct``\\ s and ``anon_vma``\\ s from process-wide counters, and
violation messages name them (``mm#4353``); how far the counters got
depends on what ran before, including how often the linearizability
check's verdict cache missed (a miss replays the history on fresh worlds).
:func:`fresh_ids` restarts the counters and empties that cache, and every
unit calls it first, so a unit prints the same message wherever it runs
(one process, ``--jobs``, Ray).  Everything else an execution reads is
rebuilt per execution (the world, lockdep's state).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from specfault.check.campaign import Campaign, CampaignInterrupted
from specfault.check.dfs import Dfs, Iterative, Search, _Node
from specfault.check.engine import Execution, replay_chooser
from specfault.check.explore import ExploreConfig, Interrupted, Result, conclude, explore, make_strategy
from specfault.check.portfolio import Kill, kill
from specfault.check.random_walk import RandomWalk
from specfault.check.scenario import lookup


def fresh_ids() -> None:
    """Number mm_structs and anon_vmas from 1 again, and forget the
    linearizability check's verdicts (see the module doc)."""
    from specfault.check import linearizability
    from specfault.mm import mm_struct, vma

    mm_struct._mm_ids = itertools.count(1)
    vma._anon_vma_ids = itertools.count(1)
    linearizability._CACHE.clear()


def explore_unit(unit: tuple[str, ExploreConfig]) -> Result:
    """``explore(lookup(name), cfg)`` as a campaign unit: ids restarted,
    and without the failing :class:`~specfault.check.engine.Execution`
    (live coroutines do not pickle; replay ``result.schedule`` for it)."""
    name, cfg = unit
    fresh_ids()
    res = explore(lookup(name), cfg)
    return replace(res, execution=None)


def kill_unit(mutant: str, **kw: object) -> Kill:
    """:func:`specfault.check.portfolio.kill` as a campaign unit (ids
    restarted): ``functools.partial(kill_unit, schedules=..., seed=...)``."""
    fresh_ids()
    return kill(mutant, **kw)  # type: ignore[arg-type]


# -- one search in pieces ----------------------------------------------------------------------

#: executions a piece runs before it splits what is left of its search
PIECE_SCHEDULES = 500
#: how many pieces the rest is split into
SPLIT_WAYS = 4


@dataclass(frozen=True)
class NodeState:
    """One node of a depth-first search's stack, without the footprints
    (they are measured again in the execution at hand): what a piece needs
    to continue the search exactly where the serial search would be."""

    enabled: tuple[int, ...]
    spent: int
    sleep: frozenset[int]
    done: frozenset[int]
    todo: tuple[int, ...]
    costs: tuple[tuple[int, int], ...]
    choice: int


@dataclass
class Piece:
    """A part of one scenario's search: a campaign unit.

    ``kind`` "dfs": the depth-first search (one :class:`~specfault.check.dfs.Search`)
    from the stack ``nodes``, whose nodes below ``floor`` are frozen (never
    backtracked: other pieces own their alternatives); "level": iterative
    bounding's searches of the schedule ``prefixes`` queued for ``bound``,
    one after the other (bounded ``dfs``, ``ipb``, ``delay``); "random":
    the random walk's schedules ``start`` .. ``start + count - 1`` (seeds
    ``cfg.seed + i``), creating the blocks after it if ``more``; "whole":
    the scenario's whole exploration in one unit (a strategy that cannot be
    split: PCT adapts to the runs it has seen, DPOR adds backtrack points to
    nodes any later execution may reach)."""

    scenario: str
    cfg: ExploreConfig
    kind: str
    nodes: tuple[NodeState, ...] = ()
    floor: int = 0
    bound: int = 0
    prefixes: tuple[tuple[int, ...], ...] = ((),)
    start: int = 0
    count: int = 0
    more: bool = False
    #: executions before the piece splits the rest of its search
    limit: int = PIECE_SCHEDULES


@dataclass
class PieceResult:
    """What a piece ran, execution by execution (so that a schedule budget
    can be cut exactly where the serial search would stop)."""

    #: per execution, in order: (sleep-set blocked, steps, failed)
    log: list[tuple[bool, int, bool]] = field(default_factory=list)
    #: per execution (with cfg.observe): (scenario.observe of its final state,), or ()
    observed: list[tuple[Hashable, ...]] = field(default_factory=list)
    #: the first failing execution's choices and seed
    failure: tuple[list[int], int] | None = None
    #: nothing of the piece's search is left (dfs)
    exhausted: bool = False
    capped: bool = False
    #: kind "whole": the scenario's result
    whole: Result | None = None


def _snapshot(node: Any) -> NodeState:
    return NodeState(tuple(node.enabled), node.spent, frozenset(node.sleep), frozenset(node.done),
                     tuple(node.todo), tuple(sorted(node.costs.items())), node.choice)


def _restore(n: NodeState) -> _Node:
    node = _Node(list(n.enabled), n.spent, set(n.sleep))
    node.done, node.todo, node.costs, node.choice = set(n.done), list(n.todo), dict(n.costs), n.choice
    return node


class PieceSearch(Search):
    """One depth-first search (:class:`~specfault.check.dfs.Search`),
    restricted to a piece: its stack starts as the piece's ``nodes``;
    nodes below ``floor`` are never backtracked.

    Soundness of the split, sleep sets included: a node's ``done``,
    ``sleep`` and ``todo`` sets, and the choice it is on, are exactly what
    the serial search has there when it reaches that point (the piece was
    cut from a search that got there the same way), and the child's sleep
    set is computed from its parent's sets with footprints measured in the
    execution at hand, as in the serial search.  So a piece explores the
    same executions, in the same order, with the same sleep-set pruning, as
    the serial search does over the same stretch; the pieces partition the
    serial order into consecutive stretches (:meth:`split`)."""

    def __init__(self, bound: int | None, reduction: str, nodes: tuple[NodeState, ...] = (),
                 floor: int = 0) -> None:
        super().__init__(bound, reduction)
        self.floor = floor
        self.stack.extend(_restore(n) for n in nodes)

    def done_with(self, ex: Execution) -> None:
        if ex.pruned:
            self.pruned += 1
        else:
            self.complete += 1
        if not self._advance(self.stack, self.floor):
            self._exhausted = True

    @staticmethod
    def _advance(stack: list[Any], floor: int) -> bool:
        """Search.done_with's backtracking, not below ``floor``: False when
        nothing is left above it."""
        while len(stack) > floor:
            node = stack[-1]
            node.done.add(node.choice)
            if node.todo:
                node.choice = node.todo.pop()
                return True
            stack.pop()
        return False

    def split(self, ways: int) -> list[tuple[tuple[NodeState, ...], int]]:
        """What is left of this piece's search (it is not exhausted), as at
        most ``ways`` pieces ``(nodes, floor)`` in the serial search's order.

        Left: the subtree of the current path, then the untried
        alternatives of each node from the deepest up to ``floor``.  The
        shallowest nodes with alternatives (the largest stretches) become
        pieces of their own — each starts at its node's next alternative —
        and the current path with everything deeper is the first piece."""
        stack = self.stack
        with_alt = [j for j in range(self.floor, len(stack)) if stack[j].todo]
        own = with_alt[:max(0, ways - 1)]
        first_floor = own[-1] + 1 if own else self.floor
        pieces = [(tuple(_snapshot(n) for n in stack), first_floor)]
        for j in reversed(own):
            nodes = [_restore(_snapshot(n)) for n in stack[:j + 1]]
            advanced = self._advance(nodes, j)
            assert advanced and len(nodes) == j + 1
            pieces.append((tuple(_snapshot(n) for n in nodes), j))
        return pieces


class _Levels:
    """Iterative bounding's searches of a piece's queued prefixes, one
    after the other, with their own deferred prefixes collected (in the
    order the serial :class:`~specfault.check.dfs.Iterative` queues them)."""

    name = "dfs"

    def __init__(self, it: Iterative, bound: int, prefixes: tuple[tuple[int, ...], ...], seed: int) -> None:
        self.cost, self.max_bound = it.cost, it.max_bound
        self.bound, self.seed = bound, seed
        self.todo = list(prefixes)
        self.todo.reverse()
        self.spilled: list[tuple[tuple[int, ...], int]] = []
        self.current: Search | None = None
        self.complete = self.pruned = 0

    def _spill(self, choices: Any, cost: int) -> None:
        if self.max_bound is None or cost <= self.max_bound:
            self.spilled.append((tuple(choices), cost))

    def next(self) -> Any:
        while True:
            if self.current is not None:
                nxt = self.current.next()
                if nxt is not None:
                    return self.seed, nxt[1]
                self.current = None
            if not self.todo:
                return None
            self.current = Search(self.bound, "none", self.todo.pop(), self.bound, self._spill, self.cost)

    def done_with(self, ex: Execution) -> None:
        assert self.current is not None
        self.current.done_with(ex)
        if ex.pruned:
            self.pruned += 1
        else:
            self.complete += 1

    def exhausted(self) -> bool:
        return not self.todo and (self.current is None or self.current.exhausted())


#: queued prefixes per "level" piece
LEVEL_CHUNK = 32


def _iterative(cfg: ExploreConfig) -> Iterative | None:
    strategy = make_strategy(cfg)
    inner = strategy.impl if isinstance(strategy, Dfs) else strategy
    return inner if isinstance(inner, Iterative) else None


def _single(cfg: ExploreConfig) -> bool:
    """The strategy is one plain depth-first search (unbounded, or sleep sets)."""
    strategy = make_strategy(cfg)
    return isinstance(strategy, Dfs) and type(strategy.impl) is Search


def root_piece(name: str, cfg: ExploreConfig, limit: int = PIECE_SCHEDULES) -> Piece:
    """The piece that starts ``name``'s search (its whole search, if the
    strategy cannot be split)."""
    if cfg.strategy == "dfs" and _single(cfg):
        return Piece(name, cfg, "dfs", limit=limit)
    if _iterative(cfg) is not None:
        return Piece(name, cfg, "level", bound=0, prefixes=((),), limit=limit)
    if cfg.strategy == "random":
        total = cfg.max_schedules
        count = limit if total is None else min(limit, total)
        return Piece(name, cfg, "random", start=0, count=count,
                     more=total is None or count < total, limit=limit)
    return Piece(name, cfg, "whole", limit=limit)


def piece_key(parent: tuple[Any, ...], j: int, child: Piece) -> tuple[Any, ...]:
    """Where a child piece goes in the campaign's order: a "level" piece
    after everything of the lower bounds — (scenario, bound, the piece that
    queued it, j), so queued prefixes run in the order the serial search
    queues them; any other piece right after its parent."""
    if child.kind == "level":
        return (parent[0], child.bound, parent, j)
    return parent + (j,)


def piece_unit(p: Piece) -> tuple[PieceResult, list[Piece]]:
    """Run a piece: a campaign unit (``Campaign(..., expand=True,
    child_key=piece_key)``): its result, and the pieces that continue its
    search."""
    fresh_ids()
    scenario = lookup(p.scenario)
    if p.kind == "whole":
        res = explore(scenario, p.cfg)
        return PieceResult(whole=replace(res, execution=None), exhausted=res.exhausted), []
    observe = scenario.observe if p.cfg.observe else None
    inner: Any
    total = p.cfg.max_schedules           # no piece runs more than the whole search may
    if p.kind == "dfs":
        inner = PieceSearch(p.cfg.max_preemptions, p.cfg.reduction, p.nodes, p.floor)
        cfg = replace(p.cfg, max_schedules=p.limit if total is None else min(p.limit, total),
                      minimize=False)
    elif p.kind == "level":
        it = _iterative(p.cfg)
        assert it is not None
        inner = _Levels(it, p.bound, p.prefixes, 0 if p.cfg.strategy == "dfs" else p.bound)
        cfg = replace(p.cfg, max_schedules=total, minimize=False)
    else:
        inner = RandomWalk(p.cfg.seed + p.start)
        cfg = replace(p.cfg, seed=p.cfg.seed + p.start, max_schedules=p.count, minimize=False)
    search = _Logged(inner, observe)
    res = explore(scenario, cfg, search=search)
    # exhausted: nothing left under the piece (a level piece's deferred prefixes are left)
    deferred = p.kind == "level" and bool(inner.spilled)
    out = PieceResult(search.log, search.observed, exhausted=res.exhausted and not deferred,
                      capped=res.capped)
    if res.original is not None:
        out.failure = (list(res.original.choices), res.original.seed)
    children: list[Piece] = []
    stopped = res.capped or (res.failure is not None and p.cfg.stop_on_failure)
    if stopped:
        pass
    elif p.kind == "dfs" and not res.exhausted:
        children = [replace(p, nodes=nodes, floor=floor) for nodes, floor in inner.split(SPLIT_WAYS)]
    elif p.kind == "level" and res.exhausted:         # the deferred prefixes, by bound
        by_cost: dict[int, list[tuple[int, ...]]] = {}
        for choices, cost in inner.spilled:
            by_cost.setdefault(cost, []).append(choices)
        for cost in sorted(by_cost):
            queued = by_cost[cost]
            for i in range(0, len(queued), LEVEL_CHUNK):
                children.append(replace(p, bound=cost, prefixes=tuple(queued[i:i + LEVEL_CHUNK])))
    elif p.kind == "random" and p.more:
        start = p.start + p.count
        for _ in range(SPLIT_WAYS):
            left = None if total is None else total - start
            if left is not None and left <= 0:
                break
            count = p.limit if left is None else min(p.limit, left)
            children.append(replace(p, start=start, count=count, more=False))
            start += count
        if children and (total is None or start < total):
            children[-1].more = True
    return out, children


class _Logged:
    """A strategy, with each execution's outcome logged (PieceResult.log)."""

    def __init__(self, inner: Any, observe: Callable[[Any], Hashable] | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.observe = observe
        self.log: list[tuple[bool, int, bool]] = []
        self.observed: list[tuple[Hashable, ...]] = []

    @property
    def complete(self) -> int:
        return getattr(self.inner, "complete", len(self.log))

    @property
    def pruned(self) -> int:
        return getattr(self.inner, "pruned", 0)

    def next(self) -> Any:
        return self.inner.next()

    def done_with(self, ex: Execution) -> None:
        self.log.append((ex.pruned, ex.steps, ex.failure is not None))
        if self.observe is not None:
            self.observed.append((self.observe(ex.state),) if not ex.pruned and ex.failure is None
                                 else ())
        self.inner.done_with(ex)

    def exhausted(self) -> bool:
        return bool(self.inner.exhausted())


class _Merge:
    """One scenario's pieces, merged in the serial search's order into the
    :class:`Result` the serial search gives (elapsed time aside)."""

    def __init__(self, name: str, cfg: ExploreConfig, start: float) -> None:
        self.name, self.cfg = name, cfg
        self.start = start
        self.schedules = self.complete = self.pruned = self.steps = self.failures = 0
        self.observations: set[Hashable] = set()
        self.first: tuple[list[int], int, int] | None = None    # choices, seed, schedules then
        self.whole: Result | None = None
        self.stopped = False          # by the budget, the first failure, or the time cap
        self.capped = False
        self.exhausted = False

    def add(self, pr: PieceResult, last: bool) -> None:
        """The next piece (``last``: no piece of this search is left after
        it).  Sets ``stopped`` when the serial search would stop in it."""
        if pr.whole is not None:
            self.whole, self.stopped = pr.whole, True
            return
        cfg = self.cfg
        for i, (pruned, steps, failed) in enumerate(pr.log):
            if cfg.max_schedules is not None and self.schedules >= cfg.max_schedules:
                self.stopped = True
                return
            self.schedules += 1
            self.steps += steps
            self.pruned += pruned
            self.complete += not pruned
            if failed:
                self.failures += 1
                if self.first is None:
                    assert pr.failure is not None
                    self.first = (pr.failure[0], pr.failure[1], self.schedules)
                if cfg.stop_on_failure:
                    self.stopped = True
                    self.exhausted = last and pr.exhausted and i == len(pr.log) - 1
                    return
            elif pr.observed and pr.observed[i]:
                self.observations.add(pr.observed[i][0])
        if cfg.max_schedules is not None and self.schedules >= cfg.max_schedules:
            self.stopped = True
            self.exhausted = last and pr.exhausted
        elif pr.capped:
            self.stopped = self.capped = True
        elif last:
            self.exhausted = pr.exhausted

    def result(self, interrupted: bool = False) -> Result:
        if self.whole is not None:
            return self.whole
        cfg = self.cfg
        res = Result(self.name, cfg.strategy, self.first is None, self.schedules, self.complete,
                     self.pruned, self.steps, time.perf_counter() - self.start,
                     self.exhausted and not interrupted, failures=self.failures,
                     observations=self.observations, capped=self.capped and not self.exhausted,
                     interrupted=interrupted)
        if self.first is not None and not interrupted:
            choices, seed, _ = self.first
            scenario = lookup(self.name)
            fresh_ids()
            ex = Execution(scenario, cfg.step_limit).run(replay_chooser(choices))
            conclude(res, scenario, cfg, ex, seed, self.schedules)
            res.execution = None
        return res


def explore_all(names: list[str], cfg: ExploreConfig, *, limit: int = PIECE_SCHEDULES,
                progress: Callable[[int, int], None] | None = None,
                **campaign: Any) -> Generator[Result, None, None]:
    """Explore each scenario of ``names`` with a campaign (``campaign``:
    ``jobs``, ``backend``, ``address``, ``in_flight``): each search split
    into pieces of ``limit`` executions where the strategy allows it.
    Yields each scenario's :class:`Result` in order, as soon as it is
    known; they are the results ``explore`` gives one by one (elapsed time,
    and the object numbers in messages, aside).  ``progress(scenario index,
    executions)`` is called as each piece finishes (in completion order).

    Ctrl-C raises :class:`~specfault.check.explore.Interrupted` whose
    ``result`` is the list of results: those yielded, then each scenario
    begun but not finished (``interrupted``; its counts are those of the
    pieces merged in order so far)."""
    roots = [root_piece(name, cfg, limit) for name in names]
    merges: dict[int, _Merge] = {}
    yielded: list[Result] = []
    since = time.perf_counter()         # a scenario's elapsed time: since the previous one's result
    try:
        tick = None if progress is None else (lambda key, pr: progress(key[0], len(pr.log)))
        with Campaign(piece_unit, roots, expand=True, child_key=piece_key, progress=tick,
                      **campaign) as run:
            for key, pr in run:
                i = key[0]
                m = merges.get(i)
                if m is None:
                    m = merges[i] = _Merge(names[i], cfg, since)
                if m.stopped:
                    continue
                m.add(pr, last=not run.open_under(i))
                if m.stopped:
                    run.drop(i)
                if m.stopped or not run.open_under(i):
                    res = m.result()
                    yielded.append(res)
                    since = time.perf_counter()
                    yield res
    except CampaignInterrupted as exc:
        partial = list(yielded)
        begun = set(merges) | {k[0] for k in exc.running if isinstance(k, tuple)}
        for i in sorted(begun):
            if i >= len(yielded):         # the pieces merged in order so far
                m = merges.get(i) or _Merge(names[i], cfg, since)
                m.whole = None
                partial.append(m.result(interrupted=True))
        raise Interrupted(partial) from None
