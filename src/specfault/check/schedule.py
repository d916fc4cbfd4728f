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

STRATEGY names the strategy that produced the schedule — one of
:data:`STRATEGIES` (``dfs``, ``ipb``, ``delay`` and ``dpor`` are
deterministic, SEED 0 for ``dfs``/``dpor``; for ``ipb``/``delay`` it is the
bound the schedule was found at; ``random``/``pct`` record their seed) —
for the reader: replay needs only the choices, so a line from any strategy
replays the same way.

Replaying a schedule performs exactly the recorded choices; if they run out
before every task finished, the replayer continues without preemption
(keep running the last actor while it can run, else the lowest-numbered
runnable one) — the same rule exhaustive search uses for its first path, so
a prefix is a valid schedule too.

A line is checked before it is expanded: at most :data:`MAX_CHOICES` steps
in all (the explorer's largest step limit), so ``0*100000000`` is refused
without building a list of a hundred million choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the strategies whose schedules the explorer writes (``replay`` re-runs one)
STRATEGIES = ("random", "pct", "dfs", "ipb", "delay", "dpor", "replay")

#: the most choices a schedule line may expand to (= the largest step limit)
MAX_CHOICES = 1_000_000


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


def _digits(text: str, most: int) -> bool:
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def decode_choices(text: str, max_choices: int = MAX_CHOICES) -> list[int]:
    """CHOICES -> the list of actors; ScheduleError if malformed or if it
    would expand to more than ``max_choices`` (checked before expanding)."""
    text = text.strip()
    if text in ("", "-"):
        return []
    if len(text) > 8 * max_choices:
        raise ScheduleError(f"schedule too long: {len(text):,} characters")
    items: list[tuple[int, int]] = []
    total = 0
    for item in text.split("."):
        actor, star, count = item.partition("*")
        if not _digits(actor, 6) or (star and not _digits(count, 9)):
            raise ScheduleError(f"bad schedule item {item[:40]!r} (expected ACTOR or ACTOR*COUNT)")
        a = int(actor)
        n = int(count) if star else 1
        if n < 1:
            raise ScheduleError(f"bad schedule item {item!r}: the count must be at least 1")
        total += n
        if total > max_choices:
            raise ScheduleError(f"schedule longer than {max_choices:,} steps (item {item[:40]!r})")
        items.append((a, n))
    choices: list[int] = []
    for a, n in items:
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
    def parse(cls, line: str, max_choices: int = MAX_CHOICES) -> Schedule:
        parts = line.strip().rsplit(":", 3)
        if len(parts) != 4 or not parts[0] or not parts[1]:
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise ScheduleError(f"not a schedule (SCENARIO:STRATEGY:SEED:CHOICES): {shown!r}")
        scenario, strategy, seed, choices = parts
        if len(scenario) > 200 or len(strategy) > 20:
            raise ScheduleError("not a schedule: scenario or strategy name too long")
        try:
            seed_value = int(seed)
        except ValueError:
            raise ScheduleError(f"bad seed {seed[:40]!r} in schedule") from None
        return cls(scenario, strategy, seed_value, decode_choices(choices, max_choices))

    def replay_command(self) -> str:
        return f"specfault check --replay '{self}'"
