"""Random walk: at every step run a runnable actor chosen uniformly.

The baseline of randomised concurrency testing (e.g. shuttle's
``RandomScheduler``); simple and fast, but bugs that need a precise ordering
of a few events are found with probability that falls quickly with the
length of the run — which is what PCT improves on.

Each execution ``i`` draws from ``random.Random(seed + i)``; its schedule
records that seed, and the choices (which alone are needed to replay).
"""

from __future__ import annotations

import random

from specfault.check.engine import Chooser, Execution


class RandomWalk:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.i = 0

    def next(self) -> tuple[int, Chooser]:
        seed = self.seed + self.i
        self.i += 1
        rng = random.Random(seed)
        rand = rng.random

        def choose(ex: Execution, enabled: list[int]) -> int:
            return enabled[int(rand() * len(enabled))]

        return seed, choose

    def done_with(self, ex: Execution) -> None:
        return None

    def exhausted(self) -> bool:
        return False
