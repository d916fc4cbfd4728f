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
