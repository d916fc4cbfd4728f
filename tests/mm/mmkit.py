"""Shared helpers for the mm tests: run one scenario on the model and, when
possible, on the host kernel, and pin both to the expected result."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hostkit import BASE, HOST_OK, host_swaps, run_host, run_host_forked  # noqa: E402

import specfault as sf  # noqa: E402

needs_host = pytest.mark.skipif(not HOST_OK, reason="needs Linux and root (pagemap PFNs)")


def on_model(scenario: Callable[[Any, int], Any], **machine: Any) -> Any:
    """Run ``scenario(process, base)`` on a fresh Machine; check() after."""
    m = sf.Machine(**machine)
    p = m.spawn()
    out = scenario(p, BASE)
    m.check()
    return out


def assert_linux(scenario: Callable[[Any, int], Any], expected: Any, forked: bool = False,
                 tmpfs: bool = False, swapless: bool = False) -> None:
    """The model gives ``expected``; so does the host kernel (when we can
    ask it), which is how ``expected`` was obtained in the first place.
    ``forked``: run the host side in a child (scenarios that fork);
    ``tmpfs``: the host's files on tmpfs, whose 4 KiB folios are the model's
    (ext4's large folios change what unmapping one page does);
    ``swapless``: the scenario pages memory out and expects no swap device
    (the model's default) — with host swap on (system-wide: another run's)
    the host side is skipped, with the reason."""
    got = on_model(scenario)
    assert got == expected, f"model: {got!r}"
    if HOST_OK and swapless and host_swaps():
        pytest.skip(f"model checked; host swap is on ({', '.join(host_swaps())}): "
                    "the host side needs none")
    if HOST_OK:
        host = (run_host_forked if forked else run_host)(scenario, tmpfs=tmpfs)
        assert host == expected, f"host kernel: {host!r} (the expectation is stale?)"
