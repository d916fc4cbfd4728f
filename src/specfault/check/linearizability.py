"""Linearizability of a concurrent mm history against the sequential model.

A history is what the threads of a scenario observed: for each step, the
real-time interval in which it ran (``start``/``end`` ticks of a shared
clock, taken atomically with the step's first and last op) and its result.
The history is *linearizable* if some total order of the steps

* keeps each thread's program order,
* puts A before B whenever A ended before B started (real time), and
* replayed one step at a time on the sequential model (direct driver, a
  fresh machine built by the same setup) gives every step the same result
  and leaves memory in the same final state (maps and page contents),

exists (Herlihy & Wing, TOPLAS 1990).  The search is a depth-first walk of
orders, pruned as soon as a replayed step disagrees; replays of a prefix
are rebuilt from scratch after a backtrack (the model has no cheap snapshot;
extending an order by one step runs that step alone), and verdicts
are memoised by history, so schedules with the same history cost nothing.

This module is only the search: the scenario hands in how to build a fresh
world, run one step on it and observe it (``check/scenarios/base.py`` does,
with the direct driver), so it imports nothing of the scenarios.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

#: one step of the history: (thread, index in the thread, start, end, result)
Event = tuple[int, int, int, int, Any]

_CACHE: dict[tuple[Any, ...], str | None] = {}
_CACHE_LIMIT = 50_000


def check_linearizable(key: Hashable, history: list[Event], final: Any,
                       fresh: Callable[[], Any], run_one: Callable[[Any, int, int], Any],
                       observe: Callable[[Any], Any]) -> str | None:
    """None if ``history`` (with ``final``, the final observation of the
    concurrent run) is linearizable, else a message.

    The scenario supplies the sequential model: ``fresh()`` builds a new
    world as the run's setup did, ``run_one(world, t, k)`` runs step ``k``
    of thread ``t`` on it to completion and returns its result, and
    ``observe(world)`` is the final observation compared with ``final``.
    ``key`` names the scenario and its configuration for the verdict
    cache (same key, history and final observation: same verdict)."""
    hist = sorted(history)
    ckey = (key, tuple((t, k, s, e, repr(r)) for t, k, s, e, r in hist), repr(final))
    if ckey in _CACHE:
        return _CACHE[ckey]
    verdict = _search(hist, final, fresh, run_one, observe)
    if len(_CACHE) > _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[ckey] = verdict
    return verdict


def _search(hist: list[Event], final: Any, fresh: Callable[[], Any],
            run_one: Callable[[Any, int, int], Any], observe: Callable[[Any], Any]) -> str | None:
    ops = {(t, k): (s, e, r) for t, k, s, e, r in hist}
    order: list[tuple[int, int]] = []
    tried = 0

    def candidates() -> list[tuple[int, int]]:
        placed = set(order)
        out = []
        for (t, k), (s, _e, _r) in ops.items():
            if (t, k) in placed:
                continue
            if k > 0 and (t, k - 1) not in placed:
                continue
            # every step that ended before this one started must come first
            if any(e2 < s and op2 not in placed for op2, (_s2, e2, _r2) in ops.items()):
                continue
            out.append((t, k))
        return sorted(out)

    # the world of the last replay and how many steps of ``order`` it ran:
    # extending the order by one step runs that step only (a backtrack, a
    # mismatch or the final observation, which reads memory, spoil it)
    cur: list[Any] = [None, -1]

    def replay(prefix: list[tuple[int, int]]) -> tuple[bool, Any]:
        """Run ``prefix`` sequentially; (all results matched, world)."""
        world, done = cur
        if world is None or done != len(prefix) - 1:
            world, done = fresh(), 0
            for t, k in prefix[:-1]:
                run_one(world, t, k)        # matched when this prefix was first run
        t, k = prefix[-1]
        got = run_one(world, t, k)
        ok = repr(got) == repr(ops[(t, k)][2])
        cur[0], cur[1] = (world, len(prefix)) if ok else (None, -1)
        return ok, world

    def dfs() -> bool:
        nonlocal tried
        if len(order) == len(ops):
            tried += 1
            world = cur[0] if cur[1] == len(order) else None
            if world is None and not order:
                world = fresh()
            elif world is None:
                ok, world = replay(order)
                if not ok:
                    return False
            cur[0], cur[1] = None, -1
            return bool(observe(world) == final)
        for cand in candidates():
            order.append(cand)
            ok, _ = replay(order)
            if ok and dfs():
                return True
            order.pop()
        return False

    if dfs():
        return None
    shown = ", ".join(f"T{t}.{k} [{s},{e}] -> {r!r}" for t, k, s, e, r in hist)
    return (f"not linearizable: no sequential order of the steps explains the results "
            f"and final memory ({tried} complete orders tried); history: {shown}")
