"""Every failing schedule ever found is kept and replayed (STYLE.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specfault.check import lookup, replay
from specfault.check.schedule import Schedule

HERE = Path(__file__).parent / "regressions"


def _cases() -> list[tuple[str, str]]:
    cases = []
    for path in sorted(HERE.glob("*.txt")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                kind, _, sched = line.partition(" ")
                cases.append((kind, sched.strip()))
    return cases


@pytest.mark.parametrize("kind,line", _cases())
def test_regression_schedule_still_fails_the_same_way(kind: str, line: str) -> None:
    sched = Schedule.parse(line)
    ex = replay(lookup(sched.scenario), sched)
    assert ex.failure is not None, f"{line}: no longer fails"
    assert ex.failure.kind == kind
    assert ex.choices == sched.choices   # exact: nothing left to the default
