"""The invariants of the reverse map, the swap device and the LRU (issue
12), kept apart from check/invariants.py's structural ones so the two
grow independently; ``kernel_problems`` calls :func:`pressure_problems`."""

from __future__ import annotations

from typing import Any

from specfault.mm.rmap import check_rmap


def pressure_problems(kernel: Any, quiescent: bool = True) -> list[str]:
    """Reverse-map consistency (mm/rmap.py ``check_rmap``)."""
    return check_rmap(kernel)
