"""specfault: an executable, checkable model of the Linux page-fault path
and its concurrency protocols (classic mmap_lock, speculative page faults,
per-VMA locks)."""

import specfault.constants as _constants
from specfault.api import Machine, Process, Thread
from specfault.config import Config, UnknownKnob
from specfault.constants import *  # noqa: F403 — the Linux constants are public API
from specfault.errors import (
    BusError,
    Deadlock,
    ModelBug,
    OutOfMemory,
    SegmentationFault,
    SignalError,
    UseAfterFree,
)
from specfault.mm.proc import PagemapEntry

__version__ = "0.1.0"

__all__ = [
    "BusError", "Config", "Deadlock", "Machine", "ModelBug", "OutOfMemory", "PagemapEntry",
    "Process", "SegmentationFault", "SignalError", "Thread", "UnknownKnob", "UseAfterFree",
] + [k for k in vars(_constants) if k.isupper()]
