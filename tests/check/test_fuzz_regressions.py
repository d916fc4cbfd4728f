"""Every fuzz finding is kept (``specfault fuzz --save``) and replayed:
its schedule must still fail the same way under its mutant, and the
program must pass under the correct protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from specfault.check.explore import explore
from specfault.check.fuzz.compile import build
from specfault.check.fuzz.regress import load

HERE = Path(__file__).parent / "fuzz_regressions"
FILES = sorted(HERE.glob("*.json"))


def test_there_are_regressions() -> None:
    assert FILES, f"no regression files in {HERE}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_fuzz_regression(path: Path) -> None:
    reg = load(path)
    assert path.name == reg.filename()
    assert reg.mutant is not None, "a finding under a correct protocol is a bug to fix, not keep"
    ex = reg.replay()
    assert ex.failure is not None, f"{path.name}: no longer fails: {reg.replay_command()}"
    assert ex.failure.kind == reg.kind
    assert ex.choices == reg.choices               # exact: nothing left to the default
    # the correct protocol: the same choices (those that can run), then a
    # short random walk, pass
    assert reg.replay(mutant=None, strict=False).failure is None
    res = explore(build(reg.program, reg.protocol), strategy="random", max_schedules=60,
                  budget_seconds=None, seed=0)
    assert res.ok, res.report
