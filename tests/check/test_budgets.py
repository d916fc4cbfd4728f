"""Budgets are schedules, so results reproduce: every mutant is killed
well inside the default budget, the kill table does not depend on the
machine (nor on hash seeds), a time cap says when it cut a run, and Ctrl-C
hands back what was done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from specfault.check import ExploreConfig, Scenario, Thread, explore
from specfault.check.explore import Interrupted, Result
from specfault.check.mutants import MUTANTS, NEW_MUTANTS
from specfault.check.portfolio import DEFAULT_SCHEDULES, kill
from specfault.check.schedule import MAX_CHOICES, ScheduleError, decode_choices
from specfault.runtime import KObject, Load, Store

SRC = str(Path(__file__).resolve().parents[2] / "src")


#: the kill table's mutants; those written after the scenarios (NEW_MUTANTS)
#: are checked in the slow campaign — the default run replays their saved kills
KILL_TABLE = [pytest.param(n, marks=pytest.mark.slow) if n in NEW_MUTANTS else n
              for n, m in MUTANTS.items() if m.expect == "scenarios"]


@pytest.mark.parametrize("mutant", KILL_TABLE)
def test_every_mutant_dies_within_half_the_default_budget(mutant: str) -> None:
    """The default (24,000 schedules) keeps a margin of 2 or more over what
    each mutant needs with seed 0; a model change that erodes it fails here,
    not on a slow machine."""
    k = kill(mutant, schedules=DEFAULT_SCHEDULES // 2, minimize=False)
    assert k.killed, f"{mutant} survived {k.schedules} schedules"
    assert not k.capped


def test_the_kill_table_does_not_depend_on_the_process() -> None:
    """Two processes with different hash seeds print the same row for a
    mutant PCT kills after a full random-walk slice, minimised schedule
    included."""
    def row(hashseed: str) -> dict[str, Any]:
        env = dict(os.environ, PYTHONPATH=SRC, PYTHONHASHSEED=hashseed)
        r = subprocess.run([sys.executable, "-m", "specfault.cli", "check", "--mutants", "--mutant",
                            "no_seq2_check", "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        (k,) = json.loads(r.stdout)
        del k["seconds"]
        k["violation"] = k["violation"].split(":")[0]   # the message names objects by address
        return dict(k)

    a, b = row("0"), row("4242")
    assert a == b
    assert a["strategy"] == "pct" and a["schedules"] > 2000


def test_a_time_cap_is_reported_as_such() -> None:
    k = kill("dufour_seq_loads_reordered", cap_seconds=1e-6, minimize=False)
    assert not k.killed and k.capped and k.verdict() == "time cap"
    res = explore(_spinning(), ExploreConfig(strategy="random", max_schedules=10**6, budget_seconds=0.2,
                                      step_limit=1000, stop_on_failure=False, minimize=False))
    assert res.capped and "time cap" in res.summary()


def test_without_a_cap_the_schedule_budget_ends_the_run() -> None:
    res = explore(_spinning(), ExploreConfig(strategy="random", max_schedules=3, budget_seconds=None,
                                      step_limit=1000, stop_on_failure=False, minimize=False))
    assert res.schedules == 3 and not res.capped and "schedule budget" in res.summary()


class _S(KObject):
    x = 0


def _spinning(interrupt_at: int | None = None) -> Scenario:
    """Two threads spinning on a word (a livelock at the step limit); with
    ``interrupt_at``, the model raises KeyboardInterrupt in that execution,
    as Ctrl-C would."""
    count = {"n": 0}

    def setup(env: Any) -> _S:
        count["n"] += 1
        return _S()

    async def reader(s: _S) -> None:
        while True:
            if count["n"] == interrupt_at:
                raise KeyboardInterrupt
            await Load(s, "x")

    async def writer(s: _S) -> None:
        while True:
            await Store(s, "x", 1)

    return Scenario("spinning", setup, [Thread("r", reader), Thread("w", writer)], rcu=False)


def test_ctrl_c_in_model_code_is_not_a_model_error() -> None:
    """KeyboardInterrupt raised inside a task is the user's, not the
    model's: it is not recorded as the task's error (a violation), it ends
    the exploration with the partial result."""
    with pytest.raises(Interrupted) as exc:
        explore(_spinning(interrupt_at=3), ExploreConfig(strategy="random", max_schedules=10, budget_seconds=None,
                                                  step_limit=1000, stop_on_failure=False,
                                                  minimize=False))
    res = exc.value.result
    assert isinstance(res, Result) and res.interrupted and res.schedules == 2
    assert res.failures == 2 and "interrupted" in res.summary()      # the two livelocks before


def test_an_interrupted_hunt_hands_back_its_partial_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    import specfault.check.portfolio as portfolio

    calls = {"n": 0}
    real = portfolio.explore

    def explore_then_ctrl_c(scenario: Scenario, cfg: ExploreConfig) -> Result:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted(Result(scenario.name, cfg.strategy, True, 7, 7, 0, 70, 0.1, False,
                                     interrupted=True))
        return real(scenario, cfg)

    monkeypatch.setattr(portfolio, "explore", explore_then_ctrl_c)
    monkeypatch.setattr(portfolio, "SLICES", (("random", 50), ("pct", 2000), ("dfs", 8000)))
    with pytest.raises(Interrupted) as exc:
        kill("dufour_seq_loads_reordered", minimize=False)
    k = exc.value.result
    assert k.interrupted and not k.killed and k.verdict() == "interrupted"
    assert k.schedules == 50 + 7 and k.strategy == "pct"


def test_a_replay_line_is_bounded_before_it_is_expanded() -> None:
    with pytest.raises(ScheduleError, match="longer than"):
        decode_choices(f"0*{MAX_CHOICES}.1")
    with pytest.raises(ScheduleError, match="longer than"):
        decode_choices("0*999999999")       # refused without building the list
    assert decode_choices("0*3.1.2*2") == [0, 0, 0, 1, 2, 2]
    assert len(decode_choices(f"0*{MAX_CHOICES}")) == MAX_CHOICES
    for bad in ("0*0", "a", "1*", "-1", "0*1e3", "٣"):
        with pytest.raises(ScheduleError):
            decode_choices(bad)


def test_config_from_env_names_a_bad_variable() -> None:
    with pytest.raises(ValueError, match="SPECFAULT_CHECK_STEP_LIMIT"):
        ExploreConfig.from_env({"SPECFAULT_CHECK_STEP_LIMIT": "many"})
    cfg = ExploreConfig.from_env({"SPECFAULT_CHECK_SEED": "5"}, defaults={"seed": 1, "max_schedules": 9})
    assert cfg.seed == 5 and cfg.max_schedules == 9
