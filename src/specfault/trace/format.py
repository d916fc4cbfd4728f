"""The trace file: one recorded run of a program, as gzip-compressed JSON lines.

Documented in docs/traces.md (format version 1).  A trace holds what the
kernel did to the program's address spaces and when: its memory syscalls
with arguments and results, its page faults, its tasks, the mappings
``perf`` reported, and for each mapped file its identity (device, inode,
name) and size — never a byte of any file's contents.

Line 1 is the header (``"k": "header"``); then one line per file
(``"k": "file"``) and per task (``"k": "task"``); then the events in
timestamp order (``t``: nanoseconds since the program's exec): ``exec``,
``sys``, ``fault``, ``clone``, ``exit``, ``signal``; then one ``final`` line
per address space whose end was observed (its /proc maps at exit).
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

FORMAT = "specfault-trace"
VERSION = 1

#: the syscalls a trace records, and the class each belongs to
MEMORY_SYSCALLS = ("mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "shmat", "shmdt",
                   "pkey_mprotect", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
                   "remap_file_pages", "process_madvise", "mseal", "mbind", "userfaultfd")
#: fd syscalls: the recorder follows the fd table with them; only ftruncate
#: and memfd_create reach the trace (the others are resolved into each
#: mmap's ``file`` and ``fmode``)
FD_SYSCALLS = ("openat", "open", "creat", "close", "close_range", "dup", "dup2", "dup3", "fcntl",
               "memfd_create", "ftruncate", "shmget")
TASK_SYSCALLS = ("clone", "clone3", "fork", "vfork", "execve", "execveat", "exit", "exit_group")

EVENT_KINDS = ("exec", "sys", "fault", "clone", "exit", "signal")

#: the fields each line kind must have, with their types
_INT = (int,)
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "header": {"format": (str,), "version": _INT},
    "file": {"id": _INT, "name": (str,), "dev": (str,), "ino": _INT},
    "task": {"tid": _INT, "pid": _INT, "comm": (str,)},
    "exec": {"t": _INT, "tid": _INT, "pid": _INT, "path": (str,), "maps": (list,)},
    "sys": {"t": _INT, "tid": _INT, "name": (str,), "args": (list,)},
    "fault": {"t": _INT, "tid": _INT, "addr": _INT, "err": _INT, "user": (bool,)},
    "clone": {"t": _INT, "tid": _INT, "child": _INT, "child_pid": _INT},
    "exit": {"t": _INT, "tid": _INT},
    "signal": {"t": _INT, "tid": _INT, "sig": _INT},
    "final": {"t": _INT, "pid": _INT, "maps": (list,)},
}


class TraceError(ValueError):
    """A file that is not a trace this version can read (names the line)."""


@dataclass
class Trace:
    """A recorded run.  ``events`` are dicts in timestamp order (see
    docs/traces.md for each kind's fields); ``files`` and ``tasks`` are
    keyed by id and tid; ``finals`` are the address spaces seen at exit."""

    header: dict[str, Any]
    files: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)

    def lines(self) -> Iterator[dict[str, Any]]:
        yield {"k": "header", **self.header}
        for fid in sorted(self.files):
            yield {"k": "file", **self.files[fid]}
        for tid in sorted(self.tasks):
            yield {"k": "task", **self.tasks[tid]}
        yield from self.events
        yield from self.finals

    def counts(self) -> dict[str, int]:
        """Events by kind (syscalls by name: ``sys:mmap``)."""
        out: dict[str, int] = {}
        for ev in self.events:
            key = ev["k"] if ev["k"] != "sys" else f"sys:{ev['name']}"
            if ev["k"] == "fault" and not ev["user"]:
                key = "kfault"
            out[key] = out.get(key, 0) + 1
        return out


def dumps(trace: Trace) -> bytes:
    """The compressed bytes of ``trace`` (deterministic: no gzip timestamp)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        for line in trace.lines():
            gz.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return buf.getvalue()


def save(trace: Trace, path: str) -> int:
    """Write ``trace`` to ``path``; returns the number of bytes written."""
    data = dumps(trace)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def load(path: str, max_bytes: int = 1 << 30) -> Trace:
    """Read and check a trace.  Raises TraceError naming the line at fault,
    OSError when the file cannot be read."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise TraceError(f"{path}: larger than {max_bytes} bytes")
    return loads(raw, path)


def loads(raw: bytes, path: str = "<trace>") -> Trace:
    if raw[:2] != b"\x1f\x8b":
        raise TraceError(f"{path}: not a trace (not gzip-compressed; traces are written by "
                         f"'specfault trace record')")
    try:
        text = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise TraceError(f"{path}: damaged gzip data: {exc}") from None
    return parse_lines(text.splitlines(), path)


def parse_lines(lines: Iterable[bytes], path: str = "<trace>") -> Trace:
    trace: Trace | None = None
    last_t = -1
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise TraceError(f"{path}: line {n}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{path}: line {n}: not a JSON object")
        kind = obj.get("k")
        if trace is None:
            if kind != "header" or obj.get("format") != FORMAT:
                raise TraceError(f"{path}: line 1 is not a {FORMAT} header")
            version = obj.get("version")
            if version != VERSION:
                raise TraceError(f"{path}: trace format version {version!r}; this specfault "
                                 f"reads version {VERSION}")
        if kind not in _SCHEMA:
            raise TraceError(f"{path}: line {n}: unknown line kind {kind!r}")
        for name, types in _SCHEMA[kind].items():
            value = obj.get(name)
            if not isinstance(value, types) or (types == _INT and isinstance(value, bool)):
                raise TraceError(f"{path}: line {n}: {kind} line without a valid {name!r}")
        if kind == "header":
            if trace is not None:
                raise TraceError(f"{path}: line {n}: a second header")
            del obj["k"]
            trace = Trace(obj)
        elif kind == "file":
            del obj["k"]
            trace.files[obj["id"]] = obj  # type: ignore[union-attr]
        elif kind == "task":
            del obj["k"]
            trace.tasks[obj["tid"]] = obj  # type: ignore[union-attr]
        elif kind == "final":
            trace.finals.append(obj)  # type: ignore[union-attr]
        else:
            if obj["t"] < last_t:
                raise TraceError(f"{path}: line {n}: events out of timestamp order")
            last_t = obj["t"]
            trace.events.append(obj)  # type: ignore[union-attr]
    if trace is None:
        raise TraceError(f"{path}: empty trace")
    for ev in trace.events:
        for m in ev.get("maps", ()):
            _check_map(m, path)
    return trace


def _check_map(m: Any, path: str) -> None:
    if not (isinstance(m, list) and len(m) == 6 and all(isinstance(x, int) for x in m[:2])
            and isinstance(m[2], str) and isinstance(m[3], int) and isinstance(m[4], int)
            and isinstance(m[5], str)):
        raise TraceError(f"{path}: malformed mapping record {m!r}")


# a mapping record, as perf's MMAP2 reports a VMA:
#   [start, end, "rwxp", offset (bytes), file id (-1: none), name ("" for a file)]
MAP_START, MAP_END, MAP_PERM, MAP_OFF, MAP_FILE, MAP_NAME = range(6)
