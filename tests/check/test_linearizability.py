"""The linearizability search on its own: a history of fetch-and-add
steps on a counter, with the sequential model handed in as functions
(the mm scenarios hand in the model machine the same way)."""

from __future__ import annotations

from typing import Any

from specfault.check.linearizability import check_linearizable


def _check(history: list[tuple[int, int, int, int, Any]], final: int) -> str | None:
    def fresh() -> list[int]:
        return [0]

    def run_one(world: list[int], t: int, k: int) -> int:
        old = world[0]
        world[0] += 1
        return old

    return check_linearizable(("faa", repr(history)), history, final, fresh=fresh,
                              run_one=run_one, observe=lambda w: w[0])


def test_overlapping_steps_may_take_either_order() -> None:
    # T0 [1,4] saw 1, T1 [2,3] saw 0: T1 went first, inside T0's interval
    assert _check([(0, 0, 1, 4, 1), (1, 0, 2, 3, 0)], 2) is None


def test_real_time_order_is_kept() -> None:
    # T0 ended (2) before T1 started (3), yet T1 saw the counter untouched
    bad = _check([(0, 0, 1, 2, 1), (1, 0, 3, 4, 0)], 2)
    assert bad is not None and bad.startswith("not linearizable") and "T1.0 [3,4] -> 0" in bad


def test_program_order_and_final_state_are_kept() -> None:
    # one thread's second step cannot come before its first
    assert _check([(0, 0, 1, 2, 1), (0, 1, 3, 4, 0)], 2) is not None
    # results explained, but the final counter is not
    assert _check([(0, 0, 1, 2, 0), (1, 0, 3, 4, 1)], 3) is not None
    assert _check([(0, 0, 1, 2, 0), (1, 0, 3, 4, 1)], 2) is None
