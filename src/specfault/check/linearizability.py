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
are rebuilt from scratch (the model has no cheap snapshot), and verdicts
are memoised by history, so schedules with the same history cost nothing.
"""

from __future__ import annotations

from typing import Any

from specfault.config import Config

_CACHE: dict[tuple[Any, ...], str | None] = {}
_CACHE_LIMIT = 50_000


def check_linearizable(spec: Any, config: Config, world: Any) -> str | None:
    """None if ``world.history`` is linearizable, else a message."""
    from specfault.check.scenarios.base import final_observation

    final = final_observation(world)
    hist = sorted(world.history)
    key = (spec.name, repr(config), tuple((t, k, s, e, repr(r)) for t, k, s, e, r in hist),
           repr(final))
    if key in _CACHE:
        return _CACHE[key]
    verdict = _search(spec, config, hist, final)
    if len(_CACHE) > _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[key] = verdict
    return verdict


def _search(spec: Any, config: Config, hist: list[tuple[int, int, int, int, Any]],
            final: Any) -> str | None:
    from specfault.check.scenarios.base import final_observation

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

    def replay(prefix: list[tuple[int, int]]) -> tuple[bool, Any]:
        """Run ``prefix`` sequentially; (all results matched, world)."""
        world = _fresh(spec, config)
        for t, k in prefix:
            got = _run_one(spec, world, t, k)
            if repr(got) != repr(ops[(t, k)][2]):
                return False, world
        return True, world

    def dfs() -> bool:
        nonlocal tried
        if len(order) == len(ops):
            tried += 1
            ok, world = replay(order)
            return ok and final_observation(world) == final
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


def _fresh(spec: Any, config: Config) -> Any:
    from specfault.check.scenarios.base import make_world
    return make_world(spec, config)


def _run_one(spec: Any, world: Any, t: int, k: int) -> Any:
    from specfault.check.scenarios.base import run_step
    from specfault.runtime import direct

    step = spec.threads[t][1][k]
    proc = world.thread_proc[t]
    machine = world.machine
    try:
        return direct.run(run_step(step, world, t), proc.task)
    finally:
        if machine.kernel.rcu.callbacks:
            machine.kernel.rcu.process()
