"""A schedule is data: which actor ran at every step.

Actors are numbered: the scenario's threads ``0..n-1`` in order, then the
RCU callback processor ``n`` (when the scenario has RCU).  A schedule
records the scenario, the strategy and seed that produced it, and the list
of choices, and prints as one line::

    SCENARIO:STRATEGY:SEED:CHOICES

with CHOICES run-length encoded as dot-separated ``actor`` or
``actor*count`` items (``-`` when empty), e.g.
``litmus.spinlock-broken:random:7:0*4.1*3.0*2``.  The scenario part may itself
contain ``:`` (``module:attr``); the line is split from the right.

Replaying a schedule performs exactly the recorded choices; if they run out
before every task finished, the replayer continues without preemption
(keep running the last actor while it can run, else the lowest-numbered
runnable one) — the same rule exhaustive search uses for its first path, so
a prefix is a valid schedule too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ScheduleError(ValueError):
    """A schedule line that does not parse, or that does not fit the scenario."""


def encode_choices(choices: list[int]) -> str:
    if not choices:
        return "-"
    out: list[str] = []
    prev, count = choices[0], 0
    for c in choices:
        if c == prev:
            count += 1
            continue
        out.append(f"{prev}*{count}" if count > 1 else str(prev))
        prev, count = c, 1
    out.append(f"{prev}*{count}" if count > 1 else str(prev))
    return ".".join(out)


def decode_choices(text: str) -> list[int]:
    text = text.strip()
    if text in ("", "-"):
        return []
    choices: list[int] = []
    for item in text.split("."):
        actor, star, count = item.partition("*")
        try:
            a = int(actor)
            n = int(count) if star else 1
        except ValueError:
            raise ScheduleError(f"bad schedule item {item!r}") from None
        if a < 0 or n < 1:
            raise ScheduleError(f"bad schedule item {item!r}")
        choices.extend([a] * n)
    return choices


@dataclass(frozen=True)
class Schedule:
    scenario: str
    strategy: str
    seed: int
    choices: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.scenario}:{self.strategy}:{self.seed}:{encode_choices(self.choices)}"

    @classmethod
    def parse(cls, line: str) -> Schedule:
        parts = line.strip().rsplit(":", 3)
        if len(parts) != 4 or not parts[0] or not parts[1]:
            raise ScheduleError(f"not a schedule (SCENARIO:STRATEGY:SEED:CHOICES): {line!r}")
        scenario, strategy, seed, choices = parts
        try:
            seed_value = int(seed)
        except ValueError:
            raise ScheduleError(f"bad seed {seed!r} in schedule") from None
        return cls(scenario, strategy, seed_value, decode_choices(choices))

    def replay_command(self) -> str:
        return f"specfault check --replay '{self}'"
