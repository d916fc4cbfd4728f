"""Where is a task in the model's source?  (For bug reports.)

A suspended task's coroutine chain (``cr_await``) leads to the innermost
``async def`` it is in.  :func:`task_site` names the deepest frame that is
model code proper — not the runtime's or the primitives' plumbing — as
``file:line in function``, so a report can say *which line* freed an object
or touched it after it was freed.
"""

from __future__ import annotations

import os
from typing import Any

_PLUMBING = (os.sep + "runtime" + os.sep, os.sep + "sync" + os.sep)


def _frames(task: Any) -> list[Any]:
    frames = []
    coro = getattr(task, "coro", None)
    while coro is not None:
        frame = getattr(coro, "cr_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None)
    return frames


#: code object -> is it plumbing (runtime/, sync/)?  Code objects live as
#: long as their functions: a handful, asked about at every RCU free
_PLUMBING_CODE: dict[Any, bool] = {}
#: (code, line) -> the site's text
_SITES: dict[tuple[Any, int], str] = {}


def _plumbing(code: Any) -> bool:
    got = _PLUMBING_CODE.get(code)
    if got is None:
        got = any(p in code.co_filename for p in _PLUMBING)
        if len(_PLUMBING_CODE) < 100_000:
            _PLUMBING_CODE[code] = got
    return got


def task_site(task: Any) -> str:
    """``path:line in func`` of the model code ``task`` is suspended in, or
    ``"?"`` when it has no live coroutine.  (Asked at every ``kfree_rcu``:
    the answer for a code object and line is kept, not formatted again.)"""
    frames = _frames(task)
    if not frames:
        return "?"
    pick = frames[-1]
    for frame in reversed(frames):
        if not _plumbing(frame.f_code):
            pick = frame
            break
    code = pick.f_code
    key = (code, pick.f_lineno)
    site = _SITES.get(key)
    if site is None:
        path = code.co_filename
        parts = path.split(os.sep)
        if "specfault" in parts:
            path = os.sep.join(parts[parts.index("specfault") + 1:])
        elif len(parts) > 2:
            path = os.sep.join(parts[-2:])
        site = f"{path}:{key[1]} in {code.co_name}"
        if len(_SITES) < 100_000:      # bounded, whatever code runs
            _SITES[key] = site
    return site
