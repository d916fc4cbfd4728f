"""(Re)write the simulator's golden results: ``python tests/sim/make_golden.py``.

tests/sim/golden/<protocol>.json holds, for every workload of
``sim.workloads.WORKLOADS``, the full :class:`~specfault.sim.metrics.RunResult`
of one small run (a few hundred faults on 4 CPUs).  tests/sim/test_golden.py
checks that ``Engine.run()`` and a loop of ``Engine.step()`` both still give
exactly these figures: a speed-up of the engine, the cost model or a fast
path that changes any simulated figure fails there.

Regenerate only for a deliberate change of simulated behaviour (a model fix,
a new cost), and say so in the commit; the diff of the JSON shows what moved.
``--check`` compares instead of writing (exit 1 on a difference).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from specfault.sim.bench import PROTOCOLS
from specfault.sim.metrics import collect
from specfault.sim.workloads import WORKLOADS, build

GOLDEN = Path(__file__).resolve().parent / "golden"
CPUS = 4
#: small parameters per workload (a few hundred faults; more threads than
#: CPUs where the workload has them, so run queues and preemption are used)
PARAMS: dict[str, dict[str, Any]] = {
    "pft": {"faults": 400},
    "page_fault1": {"faults": 400, "chunk_pages": 32},
    "page_fault2": {"faults": 400, "chunk_pages": 32},
    "page_fault3": {"faults": 400, "chunk_pages": 32},
    "mmap1": {"faults": 200},
    "ebizzy": {"faults": 400, "max_pages": 16},
    "spf_test": {"faults": 300},
    "app_launch": {"faults": 400, "maps": 10},
    "pressure": {"faults": 256, "limit": 0.5},
}
assert set(PARAMS) == set(WORKLOADS), "make_golden: every workload needs a small run"


def by_run(workload: str, protocol: str) -> dict[str, Any]:
    """The run's result with ``Engine.run()``."""
    built = build(workload, protocol, CPUS, **PARAMS[workload])
    try:
        built.engine.run()
    finally:
        built.engine.close()
    return _plain(collect(workload, protocol, CPUS, built).to_dict())


def by_steps(workload: str, protocol: str) -> dict[str, Any]:
    """The run's result with ``Engine.step()`` called until it says done."""
    built = build(workload, protocol, CPUS, **PARAMS[workload])
    try:
        while built.engine.step():
            pass
    finally:
        built.engine.close()
    return _plain(collect(workload, protocol, CPUS, built).to_dict())


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """As JSON gives it back (tuples become lists; floats round-trip exactly)."""
    return json.loads(json.dumps(d))  # type: ignore[no-any-return]


def golden_path(protocol: str) -> Path:
    return GOLDEN / f"{protocol}.json"


def load(protocol: str) -> dict[str, Any]:
    return json.loads(golden_path(protocol).read_text())  # type: ignore[no-any-return]


def render(protocol: str) -> str:
    data = {"cpus": CPUS, "runs": {w: {"params": PARAMS[w], "result": by_run(w, protocol)}
                                   for w in WORKLOADS}}
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    GOLDEN.mkdir(exist_ok=True)
    differ = []
    for protocol in PROTOCOLS:
        text = render(protocol)
        path = golden_path(protocol)
        if check:
            if not path.exists() or path.read_text() != text:
                differ.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if differ:
        print("differ from the golden results:", ", ".join(differ))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
