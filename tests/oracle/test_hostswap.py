"""The host-swap lock (oracle/hostswap.py): exclusive while a swap file is
on, shared for host runs that need swap off, and a process's own holds
nest (shared then exclusive converts its one descriptor, so a test
session holding it shared can turn swap on without waiting for itself)."""

from __future__ import annotations

import fcntl

from specfault.oracle.hostswap import _ProcessLock


def _other_can(path, op):
    """Could another open file (another process, as far as flock goes) take ``op`` now?"""
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, op | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_holds_nest_and_the_file_lock_follows_the_strongest(tmp_path):
    path = str(tmp_path / "lock")
    lock = _ProcessLock(path)
    assert _other_can(path, fcntl.LOCK_EX)
    with lock.hold(shared=True):
        assert _other_can(path, fcntl.LOCK_SH) and not _other_can(path, fcntl.LOCK_EX)
        with lock.hold(shared=False):                  # converted, not a second descriptor
            assert not _other_can(path, fcntl.LOCK_SH)
            with lock.hold(shared=True):               # inside our own exclusive hold: nothing more
                assert not _other_can(path, fcntl.LOCK_SH)
            assert not _other_can(path, fcntl.LOCK_SH)
        assert _other_can(path, fcntl.LOCK_SH) and not _other_can(path, fcntl.LOCK_EX)
    assert _other_can(path, fcntl.LOCK_EX) and lock.fh is None
