"""Errors a user of the model meets: signals for bad accesses, plus the
model-bug errors the checker reports (re-exported from the runtime)."""

from __future__ import annotations

from specfault.constants import BUS_ADRERR, SEGV_ACCERR, SEGV_MAPERR, SI_KERNEL, SIGBUS, SIGSEGV
from specfault.runtime.state import Deadlock, ModelBug, UseAfterFree


class SignalError(Exception):
    """A user access that the kernel answers with a signal."""

    signo = 0
    names: dict[int, str] = {}

    def __init__(self, addr: int, si_code: int) -> None:
        self.addr = addr
        self.si_code = si_code
        super().__init__(f"{type(self).__name__} at {addr:#x} ({self.names.get(si_code, si_code)})")


class SegmentationFault(SignalError):
    """SIGSEGV: ``si_code`` is SEGV_MAPERR (no VMA) or SEGV_ACCERR (permission),
    or SI_KERNEL (a general protection fault: a non-canonical address)."""

    signo = SIGSEGV
    names = {SEGV_MAPERR: "SEGV_MAPERR", SEGV_ACCERR: "SEGV_ACCERR", SI_KERNEL: "SI_KERNEL"}


class BusError(SignalError):
    """SIGBUS: access to a file page beyond end of file (BUS_ADRERR)."""

    signo = SIGBUS
    names = {BUS_ADRERR: "BUS_ADRERR"}


class OutOfMemory(OSError):
    """The fault returned VM_FAULT_OOM: no frame could be allocated.

    Linux would invoke the OOM killer; the model reports it to the caller
    instead and leaves every structure consistent."""


__all__ = [
    "BusError", "Deadlock", "ModelBug", "OutOfMemory", "SegmentationFault", "SignalError",
    "UseAfterFree",
]
