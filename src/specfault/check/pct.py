"""PCT: probabilistic concurrency testing.

S. Burckhardt, P. Kothari, M. Musuvathi, S. Nagarakatte, "A Randomized
Scheduler with Probabilistic Guarantees of Finding Bugs", ASPLOS 2010.

Each execution gives the actors distinct random priorities ``d .. d+n-1``
and picks ``d-1`` *change points* uniformly among the first ``k`` steps; the
scheduler always runs the highest-priority runnable actor, and at the
``i``-th change point lowers the running actor's priority to ``i`` (below
every initial priority).  A bug of *depth* ``d`` (needing ``d`` ordering
constraints) is then found by each execution with probability at least
``1 / (n * k^(d-1))``.  ``k`` is estimated as the longest execution seen so
far.  A task spawned while the execution runs gets a random rank among
the others (its creator included) when it first becomes runnable.
"""

from __future__ import annotations

import random

from specfault.check.engine import Chooser, Execution


def _insert(prio: dict[int, float], d: int, rng: random.Random) -> float:
    """A priority for an actor that appeared while the execution runs: a
    uniformly random rank among the actors' initial-range priorities (above
    the change points' ``1..d-1``), as if it had been ranked with the
    others from the start — the creator included, so a new thread does not
    always run before its creator goes on."""
    ranks = sorted(p for p in prio.values() if p > d - 1)
    j = rng.randrange(len(ranks) + 1)
    below = ranks[j - 1] if j > 0 else d - 1
    above = ranks[j] if j < len(ranks) else (ranks[-1] + 1 if ranks else d + 1)
    return (below + above) / 2


class Pct:
    name = "pct"

    def __init__(self, seed: int = 0, depth: int = 3, k_estimate: int = 50) -> None:
        if depth < 1:
            raise ValueError("pct: depth must be >= 1")
        self.seed = seed
        self.depth = depth
        self.k = max(k_estimate, 1)
        self.i = 0

    def next(self) -> tuple[int, Chooser]:
        seed = self.seed + self.i
        self.i += 1
        rng = random.Random(seed)
        d = self.depth
        prio: dict[int, float] = {}
        change: dict[int, int] = {}
        for i in range(1, d):  # change point steps -> the low priority they assign
            step = rng.randrange(self.k)
            while step in change and len(change) < self.k:
                step = rng.randrange(self.k)
            change[step] = d - i

        def choose(ex: Execution, enabled: list[int]) -> int:
            if not prio:
                order = list(range(ex.n_actors()))
                rng.shuffle(order)
                for rank, actor in enumerate(order):
                    prio[actor if actor < len(ex.tasks) else ex.rcu_actor] = d + rank
            try:
                best = max(enabled, key=prio.__getitem__)
            except KeyError:        # a task spawned while running: a random rank
                for a in enabled:
                    if a not in prio:
                        prio[a] = _insert(prio, d, rng)
                best = max(enabled, key=prio.__getitem__)
            low = change.get(ex.steps)
            if low is not None:
                prio[best] = low
                best = max(enabled, key=prio.__getitem__)
            return best

        return seed, choose

    def done_with(self, ex: Execution) -> None:
        if ex.steps > self.k:
            self.k = ex.steps

    def exhausted(self) -> bool:
        return False
