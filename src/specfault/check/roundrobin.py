"""The portfolio strategy: several strategies, taking turns schedule by schedule.

No single strategy finds every kind of bug within a small budget:

* a **random walk** finds bugs that need many preemptions anywhere (a lost
  update among 8 threads) but rarely a precise ordering of a few events
  in a long run;
* **PCT** (Burckhardt et al., ASPLOS 2010) finds a bug of depth *d* with
  probability at least 1/(n·k^(d−1)) per schedule, whatever the number of
  threads; which depth a bug has is not known in advance, so several
  depths run;
* **DFS without a preemption bound, with sleep sets**, is systematic: on a
  small program it exhausts every schedule (then the program is *verified*
  and the portfolio stops), and it finds shallow bugs in the order of its
  search; with 8 threads it would spend any budget on the first
  non-preemptive orders (8! of them at bound 0), which is why it only gets
  its share.

:class:`RoundRobin` gives schedule *i* to member *i mod m* (skipping
members that have nothing left), so a budget of N schedules gives each
member about N/m, and the result does not depend on the machine: the
members are deterministic given the seed.  When a member that covers every
schedule (unbounded DFS) is exhausted, so is the portfolio.

:data:`PORTFOLIO` is the default for user programs (``check.api``'s
``explore``/``find_bug``, ``strategy="portfolio"``, and ``specfault check``
on a program).  Its members and the schedules each textbook bug needed are
measured in ``docs/explorer.md`` ("Checking your own protocol").
"""

from __future__ import annotations

from collections.abc import Callable

from specfault.check.dfs import Dfs
from specfault.check.engine import Chooser, Execution
from specfault.check.pct import Pct
from specfault.check.random_walk import RandomWalk
from specfault.check.strategy import Strategy

#: the default portfolio's members: (name, parameters), in turn order
PORTFOLIO: tuple[tuple[str, dict[str, int | None]], ...] = (
    ("pct", {"depth": 2}),
    ("random", {}),
    ("pct", {"depth": 3}),
    ("dfs", {"max_preemptions": None}),
    ("pct", {"depth": 1}),
    ("pct", {"depth": 5}),
)


def member(name: str, seed: int, params: dict[str, int | None]) -> Strategy:
    """One member strategy; ``seed`` is the portfolio's (member *j* of a
    randomised kind uses a seed of its own derived from it)."""
    if name == "random":
        return RandomWalk(seed)
    if name == "pct":
        depth = params.get("depth") or 3
        return Pct(seed, depth)
    if name == "dfs":
        bound = params.get("max_preemptions")
        return Dfs(bound, "sleep" if bound is None else "none")
    extra = _EXTRA.get(name)
    if extra is not None:
        return extra(seed, params)
    raise ValueError(f"portfolio: unknown member strategy {name!r}")


#: further member kinds by name (strategies defined elsewhere register here)
_EXTRA: dict[str, Callable[[int, dict[str, int | None]], Strategy]] = {}


class RoundRobin:
    """Members take turns, one schedule each."""

    name = "portfolio"

    def __init__(self, seed: int = 0,
                 members: tuple[tuple[str, dict[str, int | None]], ...] = PORTFOLIO) -> None:
        # each randomised member gets its own stream: seeds far apart
        self.members: list[Strategy] = [member(n, seed + j * 1_000_003, p)
                                        for j, (n, p) in enumerate(members)]
        self.labels = [n + ("" if not p else "(" + ",".join(f"{k}={v}" for k, v in p.items()) + ")")
                       for n, p in members]
        self.turn = 0
        self.last = -1
        self.done_members: set[int] = set()
        self._exhausted = False
        self.complete = 0
        self.pruned = 0
        #: schedules run by each member
        self.runs = [0] * len(self.members)

    def next(self) -> tuple[int, Chooser] | None:
        m = len(self.members)
        if self._exhausted:
            return None
        for _ in range(m):
            j = self.turn % m
            self.turn += 1
            if j in self.done_members:
                continue
            nxt = self.members[j].next()
            if nxt is None:
                self._retire(j)
                if self._exhausted:
                    return None
                continue
            self.last = j
            self.runs[j] += 1
            return nxt
        return None

    def _retire(self, j: int) -> None:
        self.done_members.add(j)
        s = self.members[j]
        if isinstance(s, Dfs) and s.bound is None and s.exhausted():
            self._exhausted = True          # every schedule covered
        elif len(self.done_members) == len(self.members):
            self._exhausted = True

    def done_with(self, ex: Execution) -> None:
        j = self.last
        s = self.members[j]
        s.done_with(ex)
        if ex.pruned:
            self.pruned += 1
        else:
            self.complete += 1
        if s.exhausted():
            self._retire(j)

    def exhausted(self) -> bool:
        return self._exhausted

    def member_label(self) -> str:
        """The member that ran the last schedule (for reports)."""
        return self.labels[self.last] if self.last >= 0 else ""
