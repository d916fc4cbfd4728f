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


def task_site(task: Any) -> str:
    """``path:line in func`` of the model code ``task`` is suspended in, or
    ``"?"`` when it has no live coroutine."""
    frames = _frames(task)
    if not frames:
        return "?"
    pick = frames[-1]
    for frame in reversed(frames):
        if not any(p in frame.f_code.co_filename for p in _PLUMBING):
            pick = frame
            break
    path = pick.f_code.co_filename
    parts = path.split(os.sep)
    if "specfault" in parts:
        path = os.sep.join(parts[parts.index("specfault") + 1:])
    elif len(parts) > 2:
        path = os.sep.join(parts[-2:])
    return f"{path}:{pick.f_lineno} in {pick.f_code.co_name}"
