"""check/campaign.py: every backend returns results in unit order; errors,
dead workers and Ctrl-C are reported the same way."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from specfault.check.campaign import Campaign, CampaignInterrupted, UnitFailed, check_backend, map_units

sys.path.insert(0, str(Path(__file__).parent))
import campaign_units as cu  # noqa: E402


def test_serial_and_processes_give_results_in_unit_order() -> None:
    want = [x * x for x in range(12)]
    assert map_units(cu.square, range(12)) == want
    seen: list[int] = []
    assert map_units(cu.square, range(12), jobs=2, in_flight=3,
                     progress=lambda i, r: seen.append(i)) == want
    assert sorted(seen) == list(range(12))


def test_empty_campaign() -> None:
    assert map_units(cu.square, [], jobs=2) == []


def test_a_failing_unit_is_named() -> None:
    for jobs in (1, 2):
        with pytest.raises((UnitFailed, ValueError)) as info:
            map_units(cu.fail_on_three, range(6), jobs=jobs)
        if jobs == 2:
            assert isinstance(info.value, UnitFailed) and info.value.index == 3
            assert "unit three is bad" in str(info.value)


def test_a_dead_worker_is_named() -> None:
    with pytest.raises(UnitFailed) as info:
        map_units(cu.die_on_two, range(6), jobs=2)
    assert info.value.index == 2 and "died" in str(info.value)


def test_bad_backends_are_refused() -> None:
    for kw, word in (({"jobs": 0}, "jobs"), ({"jobs": -1}, "jobs"), ({"backend": "foo"}, "backend"),
                     ({"address": "x:1"}, "address")):
        with pytest.raises(ValueError, match=word):
            check_backend(**{"backend": "local", **kw})


def _slow_or_square(x: int) -> int:
    return cu.slow(x) if x == 100 else cu.square(x)


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_stops_at_once_and_keeps_the_results(jobs: int) -> None:
    units = [0, 1, 2] + [100] * 4            # 100: sleeps a minute
    sent: list[float] = []

    def progress(i: int, r: int) -> None:    # Ctrl-C once the three quick units are done
        if i == 2:
            sent.append(time.monotonic())
            threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()

    with pytest.raises(CampaignInterrupted) as info:
        map_units(_slow_or_square, units, jobs=jobs, progress=progress)
    assert time.monotonic() - sent[0] < 2.0
    exc = info.value
    assert exc.done == {0: 0, 1: 1, 2: 4}
    assert exc.running and min(exc.running) == 3


def test_a_streaming_caller_gets_the_unyielded_results() -> None:
    got = []
    with pytest.raises(CampaignInterrupted) as info:
        with Campaign(cu.square, range(6), jobs=2) as run:
            for i, r in run:
                got.append((i, r))
                if i == 1:
                    raise KeyboardInterrupt
    assert got == [(0, 0), (1, 1)]
    assert all(k > 1 for k in info.value.done)


@pytest.mark.parametrize("jobs", [1, 2])
def test_units_that_split_come_back_in_depth_first_order(jobs: int) -> None:
    with Campaign(cu.split_range, [(0, 40), (100, 130)], jobs=jobs, in_flight=3, expand=True) as run:
        got = list(run)
    keys = [k for k, _ in got]
    assert keys == sorted(keys) and keys[0] == (0,)
    assert [x for _, xs in got for x in xs] == list(range(40)) + list(range(100, 130))


@pytest.mark.parametrize("jobs", [1, 2])
def test_drop_abandons_a_subtree(jobs: int) -> None:
    out: list[int] = []
    with Campaign(cu.split_range, [(0, 40), (100, 130)], jobs=jobs, expand=True) as run:
        for key, xs in run:
            out += xs
            if 5 in xs:
                run.drop(key[:1])
    assert out == list(range(6)) + list(range(100, 130))


def test_an_endless_source_is_read_lazily() -> None:
    import itertools
    with Campaign(cu.square, itertools.count(), jobs=2, in_flight=4) as run:
        got = []
        for i, r in run:
            got.append(r)
            if i == 9:
                break
    assert got == [x * x for x in range(10)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_source_that_pauses_sees_every_result_before_its_next_batch(jobs: int) -> None:
    """A source whose next batch depends on the last batch's results
    (the fuzzer's): it yields PAUSE, and is asked again only once the
    caller has merged every result — the same batches whatever the jobs."""
    from specfault.check.campaign import PAUSE

    merged: list[int] = []
    drawn: list[list[int]] = []

    def source():  # type: ignore[no-untyped-def]
        for _ in range(4):
            batch = [sum(merged) % 7 + k for k in range(3)]    # depends on every result so far
            drawn.append(batch)
            yield from batch
            yield PAUSE

    with Campaign(cu.square, source(), jobs=jobs, in_flight=6) as run:
        for _, r in run:
            merged.append(r)
    assert len(merged) == 12
    assert drawn[1] == [sum(merged[:3]) % 7 + k for k in range(3)]
    assert drawn[3] == [sum(merged[:9]) % 7 + k for k in range(3)]


def test_a_source_that_pauses_for_nothing_is_refused() -> None:
    from specfault.check.campaign import PAUSE

    with pytest.raises(RuntimeError, match="paused twice"):
        map_units(cu.square, iter([1, PAUSE, PAUSE, 2]))
