"""The lost-write property follows values through a migration entry
(check/properties.py ``translation``: in transit, not a discard).  Without
that, a store lost between migration's unmap and its copy goes unseen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import specfault.check.properties as props
from specfault.check.explore import replay
from specfault.check.scenario import lookup
from specfault.check.schedule import Schedule
from specfault.mm.pgtable import is_migration_pte

SAVED = Path(__file__).resolve().parent.parent / "regressions" / "migration_copy_before_flush.schedule"


def _kill() -> Any:
    sched = Schedule.parse(SAVED.read_text().strip())
    return replay(lookup(sched.scenario), sched)


def test_the_store_lost_in_migration_is_reported() -> None:
    ex = _kill()
    assert ex.failure is not None and "lost write" in ex.failure.message


def test_a_migration_entry_treated_as_a_discard_hides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    original = props.translation

    def as_discard(pte: int, pages: dict[int, Any], zero: Any) -> Any:
        return None if is_migration_pte(pte) else original(pte, pages, zero)

    monkeypatch.setattr(props, "translation", as_discard)
    ex = _kill()
    assert ex.failure is None or "lost write" not in ex.failure.message
