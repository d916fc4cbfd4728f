from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def host_runner():
    """A live host runner, or skip: the host oracle needs Linux x86-64, root and a C compiler."""
    from specfault.oracle.host import HostRunner, HostUnavailable, check_host

    try:
        check_host()
    except HostUnavailable as exc:
        pytest.skip(f"no host oracle: {exc}")
    runner = HostRunner()
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def model_ready():
    from specfault.oracle.model import model_available

    why = model_available()
    if why:
        pytest.skip(f"model not runnable yet: {why}")
