"""Run the ``specfault`` command line as a user would and press Ctrl-C.

The command runs in its own session (like a job in a terminal) with stdout
on a pipe and stderr on a pseudo-terminal, so rich draws its progress bars
as it does for a user.  Once its output shows that work has started (and
some has finished), SIGINT goes to its whole process group, as the
terminal sends it on Ctrl-C — worker processes included.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


@dataclass
class Interrupted:
    code: int
    out: str
    err: str
    #: seconds from SIGINT to exit
    latency: float
    #: the output seen when SIGINT was sent
    before: str


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This checkout's sources first on PYTHONPATH (then ``extra``'s)."""
    env = dict(os.environ)
    env["COLUMNS"] = "120"
    env.update(extra or {})
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``specfault ARGV`` to completion, output captured."""
    return subprocess.run([sys.executable, "-m", "specfault.cli", *argv], capture_output=True, text=True,
                          env=_env(env), timeout=timeout)


def interrupt(argv: list[str], ready: Callable[[str, str], bool], env: dict[str, str] | None = None,
              timeout: float = 60.0, settle: float = 0.0) -> Interrupted:
    """Start ``specfault ARGV``; when ``ready(stdout, stderr)`` holds (polled
    as output arrives), wait ``settle`` seconds and send SIGINT to its
    process group; return how it ended."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "specfault.cli", *argv], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, env=_env(env),
                            start_new_session=True)
    os.close(slave)
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    os.set_blocking(out_fd, False)
    out, err = bytearray(), bytearray()

    def pump(wait: float) -> None:
        fds = [fd for fd in (out_fd, master) if fd >= 0]
        rd, _, _ = select.select(fds, [], [], wait)
        for fd in rd:
            try:
                chunk = os.read(fd, 65536)
            except OSError:         # the pty's other end closed
                chunk = b""
            (out if fd == out_fd else err).extend(chunk)

    def text(b: bytearray) -> str:
        return b.decode("utf-8", "replace")

    deadline = time.monotonic() + timeout
    try:
        while not ready(text(out), _plain(text(err))):
            if proc.poll() is not None:
                raise AssertionError(f"{argv} ended (exit {proc.returncode}) before it was ready:\n"
                                     f"{text(out)}\n{_plain(text(err))}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv} never got ready:\n{text(out)}\n{_plain(text(err))}")
            pump(0.05)
        end = time.monotonic() + settle
        while time.monotonic() < end:
            pump(0.05)
        before = text(out) + _plain(text(err))
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        while proc.poll() is None and time.monotonic() < sent + 10:
            pump(0.05)
        latency = time.monotonic() - sent
        if proc.poll() is None:
            raise AssertionError(f"{argv} still running 10 s after SIGINT")
        for _ in range(50):         # drain
            n = len(out) + len(err)
            pump(0.02)
            if len(out) + len(err) == n:
                break
        return Interrupted(proc.returncode, text(out), _plain(text(err)), latency, before)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        os.close(master)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def _plain(s: str) -> str:
    """Terminal output without escape sequences and carriage returns."""
    return _ANSI.sub("\n", s)
