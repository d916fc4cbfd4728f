"""Module-level unit functions for tests/check/test_campaign*.py: worker
processes (spawn) and Ray import them by name."""

from __future__ import annotations

import os
import time


def square(x: int) -> int:
    time.sleep(0.002 * (x % 3))          # finish out of order
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("unit three is bad")
    return x


def die_on_two(x: int) -> int:
    if x == 2:
        os._exit(7)
    return x


def slow(x: int) -> int:
    time.sleep(60)
    return x


def split_range(unit: tuple[int, int]) -> tuple[list[int], list[tuple[int, int]]]:
    """A unit that does a little of its range and splits the rest: the
    numbers it covers, then three pieces of what is left, in order."""
    lo, hi = unit
    time.sleep(0.001 * (lo % 4))
    mine = list(range(lo, min(hi, lo + 2)))
    rest = list(range(lo + 2, hi))
    if not rest:
        return mine, []
    step = max(1, -(-len(rest) // 3))
    return mine, [(a, min(a + step, hi)) for a in range(lo + 2, hi, step)]
