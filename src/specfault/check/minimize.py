"""Shrinking a failing schedule: fewer preemptions first, then fewer steps.

A greedy search in the spirit of delta debugging (Zeller & Hildebrandt,
"Simplifying and Isolating Failure-Inducing Input", TSE 2002) over the
schedule seen as *segments* (maximal runs of one actor).  Candidates:
truncating after a segment (the rest runs without preemption), deleting a
segment, shortening a segment by one step, and swapping two adjacent
segments.  Each candidate is replayed leniently (choices that cannot run
are skipped); it is kept if it fails the same way (same failure kind) with
a smaller (preemptions, steps).  The kept execution's *actual* choices are
the new schedule, so the result replays exactly.

Before the greedy pass, a failure with more than one preemption is looked
for again with iterative context bounding (CHESS: bounds 0, 1, ...), which
finds the fewest-preemption witness directly on small scenarios.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from specfault.check.dfs import Dfs
from specfault.check.engine import Execution, replay_chooser
from specfault.check.scenario import Scenario


def _segments(choices: list[int]) -> list[tuple[int, int]]:
    segs: list[tuple[int, int]] = []
    for c in choices:
        if segs and segs[-1][0] == c:
            segs[-1] = (c, segs[-1][1] + 1)
        else:
            segs.append((c, 1))
    return segs


def _flat(segs: list[tuple[int, int]]) -> list[int]:
    out: list[int] = []
    for a, n in segs:
        out.extend([a] * n)
    return out


def _candidates(choices: list[int]) -> Iterator[list[int]]:
    segs = _segments(choices)
    for j in range(len(segs)):            # truncate: shortest first
        yield _flat(segs[:j])
    for j in range(len(segs)):            # delete a segment
        yield _flat(segs[:j] + segs[j + 1:])
    for j in range(len(segs) - 1):        # swap neighbours
        yield _flat(segs[:j] + [segs[j + 1], segs[j]] + segs[j + 2:])
    for j in range(len(segs)):            # shorten a segment
        a, n = segs[j]
        if n > 1:
            yield _flat(segs[:j] + [(a, n - 1)] + segs[j + 1:])


def _key(ex: Execution) -> tuple[int, int]:
    return (ex.preemptions, ex.steps)


def _fewer_preemptions(scenario: Scenario, best: Execution, step_limit: int, max_runs: int,
                       deadline: float) -> tuple[Execution, int]:
    """Iterative context bounding (CHESS): look for the same failure with
    0, 1, ... preemptions, fewer than ``best`` has."""
    target = best.failure
    assert target is not None
    runs = 0
    # bounded dfs runs bound 0, then 1, ... (each schedule once): the first
    # hit has the fewest preemptions
    dfs = Dfs(best.preemptions - 1, "none")
    while runs < max_runs and time.perf_counter() < deadline:
        nxt = dfs.next()
        if nxt is None:
            break
        ex = Execution(scenario, step_limit).run(nxt[1])
        dfs.done_with(ex)
        runs += 1
        if ex.failure is not None and ex.failure.same_as(target) and _key(ex) < _key(best):
            return ex, runs
    return best, runs


def minimize(scenario: Scenario, failing: Execution, step_limit: int,
             max_runs: int = 400, max_seconds: float | None = None) -> tuple[Execution, int]:
    """Return the smallest failing execution found, and how many runs it
    took.  Bounded by ``max_runs`` replays; ``max_seconds`` adds a time cap
    (None: none — then the result is the same on every machine)."""
    target = failing.failure
    assert target is not None, "minimize: execution did not fail"
    deadline = time.perf_counter() + max_seconds if max_seconds is not None else float("inf")
    best, runs = failing, 0
    if failing.preemptions > 1:
        best, runs = _fewer_preemptions(scenario, failing, step_limit, max_runs // 2, deadline)
    improved = True
    while improved and runs < max_runs and time.perf_counter() < deadline:
        improved = False
        seen: set[tuple[int, ...]] = set()
        for cand in _candidates(best.choices):
            key = tuple(cand)
            if key in seen:
                continue
            seen.add(key)
            ex = Execution(scenario, step_limit).run(replay_chooser(cand, strict=False))
            runs += 1
            if ex.failure is not None and ex.failure.same_as(target) and _key(ex) < _key(best):
                best = ex
                improved = True
                break
            if runs >= max_runs or time.perf_counter() >= deadline:
                break
    return best, runs
