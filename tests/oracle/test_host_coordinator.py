"""The host coordinator's own exit paths."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from specfault.oracle.host import HostUnavailable, check_host


def test_coordinator_ends_quietly_when_its_caller_is_gone() -> None:
    """Ctrl-C can kill the caller while a coordinator is still starting: its
    hello then meets a closed pipe.  It must end without a traceback (which
    would land on the user's terminal after the interrupted summary)."""
    try:
        check_host()
    except HostUnavailable as exc:
        pytest.skip(f"no host oracle: {exc}")
    r, w = os.pipe()
    os.close(r)                                   # the caller is gone
    proc = subprocess.run([sys.executable, "-m", "specfault.oracle.host"], stdin=subprocess.DEVNULL,
                          stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
