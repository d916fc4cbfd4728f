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


SWAP_MIB = 64


@pytest.fixture(scope="module")
def host_swap():
    """A swap file enabled on the host for the module's tests, removed
    afterwards (swapoff, rm): the host runs without swap, and MADV_PAGEOUT
    of anonymous or shmem pages swaps them out only with some.  Needs Linux,
    root, mkswap/swapon/swapoff and a filesystem that takes swap files;
    skips with the reason otherwise.  Yields the swap file's path."""
    import shutil
    import subprocess

    if sys.platform != "linux":
        pytest.skip("swap on the host needs Linux")
    if os.geteuid() != 0:
        pytest.skip("creating and enabling a swap file needs root")
    tools = {t: shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin")
             for t in ("mkswap", "swapon", "swapoff")}
    if not all(tools.values()):
        pytest.skip(f"no {', '.join(t for t, p in tools.items() if not p)} on this host")
    path = f"/var/tmp/specfault-swap-{os.getpid()}"
    with open(path, "wb") as f:                  # written, not sparse: swapon refuses holes
        chunk = bytes(1 << 20)
        for _ in range(SWAP_MIB):
            f.write(chunk)
    os.chmod(path, 0o600)
    try:
        for cmd in ([tools["mkswap"], path], [tools["swapon"], path]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
        yield path
    finally:
        if path in open("/proc/swaps").read():
            subprocess.run([tools["swapoff"], path], capture_output=True)
        os.unlink(path)
