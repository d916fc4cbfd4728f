"""Failure reports: the violated property, a per-CPU swimlane of the steps,
the schedule, and the one-line command that replays it.

The swimlane has one column per CPU (headed with the tasks it runs) and one
for the RCU callback processor; each row is one step, written in the column
of the CPU that took it; ``>>`` marks a preemption (the previous actor could
have gone on), ``!!`` the step that failed.
"""

from __future__ import annotations

from typing import Any

from specfault.check.engine import Execution
from specfault.check.schedule import Schedule

_WIDTH = 36


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def swimlane_rows(ex: Execution) -> tuple[list[str], list[tuple[int, str, int, str]]]:
    """The swimlane as data: the column heads (one per CPU, headed with the
    tasks it runs, then ``rcu`` if the RCU processor ran), and per step
    ``(step, mark, column, text)`` — mark ``>>`` a preemption (the previous
    actor could have gone on), ``!!`` the step that failed, else ``""``;
    text in full."""
    cpus: list[Any] = []
    for t in ex.tasks:
        if t.cpu not in cpus:
            cpus.append(t.cpu)
    cpus.sort(key=lambda c: c.id)
    col_of: dict[int, int] = {t.tid: cpus.index(t.cpu) for t in ex.tasks}
    heads = []
    for cpu in cpus:
        names = ",".join(t.name for t in ex.tasks if t.cpu is cpu)
        heads.append(f"cpu{cpu.id} [{names}]")
    if any(a == ex.rcu_actor for a, _ in ex.trace):
        col_of[ex.rcu_actor] = len(cpus)
        heads.append("rcu")
    failed_at = ex.failure.step - 1 if ex.failure is not None and ex.failure.actor is not None else -1
    pre_steps = _preemption_steps(ex)
    rows = []
    for i, (actor, op) in enumerate(ex.trace):
        mark = "!!" if i == failed_at else (">>" if i in pre_steps else "")
        text = op.describe()
        if actor != ex.rcu_actor and ex.n_actors() > 1 and len(ex.tasks) != len(cpus):
            text = f"{ex.actor_name(actor)}: {text}"
        rows.append((i, mark, col_of[actor], text))
    return heads, rows


def swimlane(ex: Execution, width: int | None = None) -> str:
    """The swimlane as text; columns ``width`` wide (default 36, narrower
    when there are more than four, down to 16)."""
    heads, rows = swimlane_rows(ex)
    ncols = len(heads)
    if width is None:
        width = max(16, min(_WIDTH, 150 // max(ncols, 1)))
    lines = ["step  " + " | ".join(_cut(h, width).ljust(width) for h in heads)]
    lines.append("-" * len(lines[0]))
    for i, mark, col, text in rows:
        cells = [""] * ncols
        cells[col] = _cut(text, width)
        lines.append(f"{i:4d}{mark or '  '}" + " | ".join(c.ljust(width) for c in cells).rstrip())
    return "\n".join(lines)


def _preemption_steps(ex: Execution) -> set[int]:
    return set(ex.preempted_at)


def failure_report(ex: Execution, schedule: Schedule, explored: int | None = None,
                   original: Schedule | None = None) -> str:
    f = ex.failure
    assert f is not None
    who = ""
    if f.actor is not None:
        name = ex.actor_name(f.actor)
        cpu = "" if f.actor == ex.rcu_actor else f" on cpu{ex.tasks[f.actor].cpu.id}"
        who = f" at step {f.step - 1} by {name}{cpu}"
    lines = [f"VIOLATION {f.kind}: {f.message}",
             f"scenario {ex.scenario.name!r}{who}"]
    if f.site:
        lines.append(f"model code: {f.site}")
    lines.append(f"{ex.steps} steps, {ex.preemptions} preemptions"
                 + (f" (found after {explored} schedules)" if explored is not None else ""))
    lines.append("")
    lines.append(swimlane(ex))
    lines.append("")
    lines.append(f"schedule: {schedule}")
    if original is not None and original.choices != schedule.choices:
        lines.append(f"(minimised from {len(original.choices)} steps)")
    lines.append(f"replay:   {schedule.replay_command()}")
    lines.append(f"python:   specfault.check.replay(scenario, {str(schedule)!r})")
    return "\n".join(lines)
