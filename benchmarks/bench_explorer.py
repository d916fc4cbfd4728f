"""Explorer throughput: schedules per second, per strategy.

The scenario is two threads of 25 ops each (50 steps per schedule): each
thread increments a shared counter under a spinlock five times, and updates
private and shared fields in between — a stand-in for two faulting threads.

    python benchmarks/bench_explorer.py [--seconds 3]

Prints one line per strategy; does not assert on wall time.
"""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

from specfault.check import Scenario, Thread, explore
from specfault.check.litmus import Shared
from specfault.runtime import Load, Store, Work
from specfault.sync import SpinLock


def scenario() -> Scenario:
    def setup(env: Any) -> Shared:
        return Shared(name="bench", n=0, a=0, b=0, lock=SpinLock("ptl"))

    def thread(mine: str) -> Any:
        async def body(st: Shared) -> None:
            for _ in range(5):                  # 5 x 5 ops = 25 ops
                await Work("fault")
                await st.lock.lock()
                n = await Load(st, "n")
                await Store(st, "n", n + 1)
                await st.lock.unlock()
            await Store(st, mine, 1)
        return body

    def check(st: Shared) -> str | None:
        return None if st.n == 10 else f"lost update: {st.n}"

    return Scenario("bench.two-threads", setup, [Thread("T0", thread("a")), Thread("T1", thread("b"))],
                    check=check, rcu=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    sc = scenario()
    print(f"python {platform.python_version()} on {platform.machine()}; scenario {sc.name}")
    runs: list[tuple[str, dict[str, Any]]] = [
        ("random", {"strategy": "random"}),
        ("pct (d=3)", {"strategy": "pct", "pct_depth": 3}),
        ("dfs (<=2 preemptions)", {"strategy": "dfs", "max_preemptions": 2, "reduction": "none"}),
        ("dfs + sleep sets (unbounded)", {"strategy": "dfs", "max_preemptions": None, "reduction": "sleep"}),
    ]
    for label, over in runs:
        res = explore(sc, budget_seconds=args.seconds, **over)
        if not res.ok:
            print(res.report)
            return 1
        steps = res.steps / max(res.schedules, 1)
        extra = " (exhausted)" if res.exhausted else ""
        print(f"{label:30s} {res.schedules:8d} schedules in {res.elapsed:5.2f}s = "
              f"{res.rate():8.0f} schedules/s, {steps:5.1f} steps/schedule{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
