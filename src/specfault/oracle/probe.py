"""Load the C touch probes (probe.c), compiling them with the host's C compiler.

The host runner needs touches that fault to be observed, not fatal; see the
essay at the top of probe.c.  The shared object is built once per source
version into the temp directory and loaded with ctypes.  ``load()`` raises
``ProbeUnavailable`` when there is no C compiler or the machine is not
x86-64 Linux; callers then fall back to recorded host results.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import resources


class ProbeUnavailable(RuntimeError):
    """The host probes cannot be built or loaded on this machine."""


_lib: ctypes.CDLL | None = None


def _source() -> bytes:
    return resources.files(__package__).joinpath("probe.c").read_bytes()


def build() -> str:
    """Compile probe.c if needed; return the path of the shared object."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise ProbeUnavailable("the host oracle needs x86-64 Linux")
    src = _source()
    digest = hashlib.sha256(src).hexdigest()[:16]
    so = os.path.join(tempfile.gettempdir(), f"specfault-probe-{digest}.so")
    if os.path.exists(so):
        return so
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise ProbeUnavailable("no C compiler (gcc/cc) to build the touch probes")
    with tempfile.TemporaryDirectory() as tmp:
        c_path = os.path.join(tmp, "probe.c")
        with open(c_path, "wb") as f:
            f.write(src)
        out = os.path.join(tmp, "probe.so")
        proc = subprocess.run([cc, "-O1", "-fPIC", "-shared", "-o", out, c_path],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ProbeUnavailable(f"cannot compile probe.c: {proc.stderr.strip()}")
        tmp_so = f"{so}.{os.getpid()}"
        shutil.copy(out, tmp_so)
        os.replace(tmp_so, so)
    return so


def load() -> ctypes.CDLL:
    """Return the loaded probe library with its signatures declared."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(build())
        lib.probe_install.restype = ctypes.c_int
        lib.probe_read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        lib.probe_write.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        lib.probe_exec.argtypes = [ctypes.c_void_p]
        lib.probe_last.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                   ctypes.POINTER(ctypes.c_size_t)]
        _lib = lib
    return _lib


def last_signal(lib: ctypes.CDLL) -> tuple[int, int, int]:
    """(signo, si_code, si_addr) of the signal that ended the last probe."""
    sig, code, addr = ctypes.c_int(), ctypes.c_int(), ctypes.c_size_t()
    lib.probe_last(ctypes.byref(sig), ctypes.byref(code), ctypes.byref(addr))
    return sig.value, code.value, addr.value
