"""Shrink a diverging program to a shorter one that still diverges.

Greedy delta debugging over steps (chunks of halving size, then single
steps), then simplification of step arguments (fewer pages, fewer flags).
Removing a ``fork`` also removes every step of the child it created and of
that child's descendants, and renumbers later processes, so candidates stay
valid; a candidate that is still invalid is skipped.  ``still_fails`` is
called on valid candidates only and must be deterministic (both sides are).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .program import Program, ProgramError


def _remove(prog: Program, drop: set[int]) -> Program | None:
    """Remove the steps in ``drop`` (and the descendants of dropped forks); renumber processes."""
    steps = prog.steps
    # process numbers: fork k (in order) creates process k+1
    creator: dict[int, int] = {}       # child proc -> index of the fork step creating it
    parent: dict[int, int] = {}
    n = 1
    for i, s in enumerate(steps):
        if s["op"] == "fork":
            creator[n] = i
            parent[n] = s.get("proc", 0)
            n += 1
    dead: set[int] = set()
    for child, i in creator.items():
        if i in drop or parent[child] in dead:
            dead.add(child)
    renumber: dict[int, int] = {0: 0}
    nxt = 1
    out: list[dict[str, Any]] = []
    for i, s in enumerate(steps):
        p = s.get("proc", 0)
        if i in drop or p in dead:
            continue
        if s["op"] == "fork":
            child = next(c for c, j in creator.items() if j == i)
            renumber[child] = nxt
            nxt += 1
        t = dict(s)
        t["proc"] = renumber[p]
        out.append(t)
    cand = prog.replace_steps(out)
    try:
        cand.validate()
    except ProgramError:
        return None
    return cand


def _adopt(prog: Program, fork_index: int) -> Program | None:
    """Remove fork ``fork_index`` and give its child's steps to the parent (renumbering the rest)."""
    steps = prog.steps
    n = 1
    child = -1
    for i, s in enumerate(steps):
        if s["op"] == "fork":
            if i == fork_index:
                child = n
            n += 1
    if child < 0:
        return None
    parent = steps[fork_index].get("proc", 0)
    out = []
    for i, s in enumerate(steps):
        if i == fork_index:
            continue
        t = dict(s)
        p = t.get("proc", 0)
        t["proc"] = parent if p == child else (p - 1 if p > child else p)
        out.append(t)
    cand = prog.replace_steps(out)
    try:
        cand.validate()
    except ProgramError:
        return None
    return cand


def _simplifications(step: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in ("npages", "new_npages", "len"):
        v = step.get(key)
        if isinstance(v, int) and v > 1:
            for smaller in (1, v // 2, v - 1):
                if 1 <= smaller < v:
                    out.append({**step, key: smaller})
    for key in ("flags",):
        v = step.get(key)
        if isinstance(v, list):
            for name in ("MAP_POPULATE", "MAP_NORESERVE"):
                if name in v:
                    out.append({**step, key: [f for f in v if f != name]})
    for key in ("off", "misalign"):
        if step.get(key):
            out.append({k: v for k, v in step.items() if k != key})
    if step.get("op") == "touch" and step.get("kind") == "exec":
        out.append({**step, "kind": "read"})
    return out


def shrink(prog: Program, still_fails: Callable[[Program], bool], budget: int = 300) -> Program:
    """The smallest program found (within ``budget`` calls) for which ``still_fails`` holds."""
    calls = 0

    def test(cand: Program | None) -> bool:
        nonlocal calls
        if cand is None or calls >= budget:
            return False
        calls += 1
        return still_fails(cand)

    best = prog
    chunk = max(1, len(best.steps) // 2)
    while chunk >= 1:
        i = 0
        progress = False
        while i < len(best.steps):
            cand = _remove(best, set(range(i, min(i + chunk, len(best.steps)))))
            if cand is not None and len(cand.steps) < len(best.steps) and test(cand):
                best = cand
                progress = True
            else:
                i += chunk
        if not progress:
            chunk //= 2
    i = 0
    while i < len(best.steps):
        if best.steps[i]["op"] == "fork" and test(_adopt(best, i)):
            best = _adopt(best, i) or best
            continue
        i += 1
    changed = True
    while changed and calls < budget:
        changed = False
        for i, step in enumerate(best.steps):
            for simpler in _simplifications(step):
                steps = list(best.steps)
                steps[i] = simpler
                cand = best.replace_steps(steps)
                try:
                    cand.validate()
                except ProgramError:
                    continue
                if test(cand):
                    best = cand
                    changed = True
                    break
    return best
