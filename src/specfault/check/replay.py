"""Replay: run one recorded schedule again, exactly.

The stateless-replay idea of CHESS (Musuvathi & Qadeer et al., "Finding and
Reproducing Heisenbugs in Concurrent Programs", OSDI 2008): since the
scenario is deterministic and the scheduler chooses every step, the list of
choices reproduces the execution — same steps, same trace, same failure.
If the choices end before the run does, it continues without preemption.
"""

from __future__ import annotations

from specfault.check.engine import Chooser, Execution, replay_chooser
from specfault.check.schedule import Schedule


class Replay:
    name = "replay"

    def __init__(self, schedule: Schedule, strict: bool = True) -> None:
        self.schedule = schedule
        self.strict = strict
        self._used = False

    def next(self) -> tuple[int, Chooser] | None:
        if self._used:
            return None
        self._used = True
        return self.schedule.seed, replay_chooser(self.schedule.choices, self.strict)

    def done_with(self, ex: Execution) -> None:
        return None

    def exhausted(self) -> bool:
        return self._used
