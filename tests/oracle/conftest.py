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


@pytest.fixture(scope="module")
def host_swap():
    """A swap file enabled on the host for the module's tests, removed
    afterwards (hostswap.HostSwap: swapon, page-cluster 0; then swapoff,
    rm): the host runs without swap, and MADV_PAGEOUT of anonymous or
    shmem pages swaps them out only with some.  Host swap is system-wide,
    so the fixture holds the host-swap lock (hostswap.LOCK_PATH) while it
    is on: a concurrent run of these tests, of the oracle's --swap mode or
    of benchmarks/bench_pressure_host.py waits for it.  Needs Linux, root,
    mkswap/swapon/swapoff and no other swap device; skips with the reason
    otherwise.  Yields the HostSwap (``.path``, ``.pages``)."""
    from specfault.oracle import hostswap

    why = hostswap.unavailable()
    if why:
        pytest.skip(why)
    try:
        swap = hostswap.HostSwap().__enter__()
    except hostswap.SwapUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield swap
    finally:
        swap.__exit__(None, None, None)


@pytest.fixture(scope="module")
def swap_runner(host_swap, host_runner):
    """(a host runner in swap mode — it records each step's counters —,
    the swap file's size in pages) while ``host_swap`` is on.  The plain
    ``host_runner`` is requested for its availability check only: it runs
    programs holding the host-swap lock shared, which this module's
    ``host_swap`` holds exclusively."""
    from specfault.oracle.host import HostRunner

    runner = HostRunner(swap=True)
    yield runner, host_swap.pages
    runner.close()
