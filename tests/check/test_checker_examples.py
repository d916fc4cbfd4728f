"""The textbook bugs of specfault.check.examples: every broken program is
found by the default portfolio within 10,000 schedules (the budget is the
bound: schedules, not seconds), after as many schedules as the table in
docs/explorer.md says; every correct program passes — over every schedule
where it is small, else the portfolio's budget (1,000 schedules here,
10,000 under ``-m slow``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from specfault.check.engine import Execution, nonpreemptive
from specfault.check.examples import CASES, Case
from specfault.check.pytest import assert_finds_bug, assert_no_bug, assert_verified

BUDGET = 10_000
DOC = Path(__file__).resolve().parents[2] / "docs" / "explorer.md"


def _doc_table() -> dict[str, int]:
    """program -> the portfolio's schedules, from the docs' table."""
    text = DOC.read_text()
    section = text[text.index("### A dozen textbook bugs"):]
    out = {}
    for m in re.finditer(r"^\| `([^`]+)` \| [^|]+ \| (\d+) \| (\w+) \| ([\d,]+) \|", section, re.M):
        out[m.group(1)] = int(m.group(4).replace(",", ""))
    return out


TABLE = _doc_table()


def test_the_table_lists_every_case_and_enough_of_them() -> None:
    assert sorted(TABLE) == sorted(c.name for c in CASES)
    modules = {c.module for c in CASES}
    assert len(modules) >= 12
    assert len({c.module for c in CASES if c.threads >= 8}) >= 3


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_broken_is_found_by_the_default_portfolio(case: Case) -> None:
    _, broken = case.programs()
    res = assert_finds_bug(broken, case.expect, within=BUDGET)
    assert res.schedules <= BUDGET
    assert res.schedules == TABLE[case.name], (
        f"{case.name}: found after {res.schedules} schedules, the table in docs/explorer.md says "
        f"{TABLE[case.name]} (python benchmarks/bench_checker_examples.py)")



@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_programs_run_the_threads_the_table_says(case: Case) -> None:
    for prog in case.programs():
        ex = Execution(prog).run(nonpreemptive)
        assert len(ex.tasks) == case.threads + 1          # main and its threads


_CORRECT = {c.correct + "@" + c.module: c for c in CASES}.values()


@pytest.mark.parametrize("case", _CORRECT, ids=lambda c: f"{c.module}:{c.correct}")
def test_correct_passes(case: Case) -> None:
    correct, _ = case.programs()
    if case.exhaustive:
        res = assert_verified(correct, max_schedules=5_000)
        assert res.exhausted
    else:
        assert_no_bug(correct, schedules=1_000)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in _CORRECT if not c.exhaustive],
                         ids=lambda c: f"{c.module}:{c.correct}")
def test_correct_passes_the_whole_budget(case: Case) -> None:
    correct, _ = case.programs()
    assert_no_bug(correct, schedules=BUDGET)
