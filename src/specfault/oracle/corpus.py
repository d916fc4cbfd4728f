"""Saved programs with their recorded host results (tests/oracle_corpus/*.json).

An entry lets any machine replay a program deterministically: against the
live host kernel when it can (and then also checks the kernel still does
what was recorded, if it is the same kernel series — major.minor, e.g.
6.18: builds and stable updates of one series keep the mm behaviour a
program can observe), else against the recorded host record.  ``expect`` is "agree" once the model matches the host
on the program, "diverge" while a model bug it records is open.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
from dataclasses import dataclass
from typing import Any

from .program import Program, ProgramError

FORMAT = "specfault-oracle-corpus/1"


@dataclass
class Entry:
    name: str
    program: Program
    host: dict[str, Any] | None
    note: str = ""
    expect: str = "agree"
    kernel: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "note": self.note, "expect": self.expect,
                "kernel": self.kernel, "program": self.program.to_json(), "host": self.host}


def load(path: str) -> Entry:
    """A corpus entry, or a bare program (then ``host`` is None).  Raises ProgramError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ProgramError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProgramError(f"{path}: not UTF-8 text, not a program") from None
    return loads(text, path)


def loads(text: str, path: str) -> Entry:
    """:func:`load` of the text of ``path``.  Raises ProgramError."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProgramError(f"{path}: not JSON: {exc}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        prog = Program.from_json(obj.get("program"))
        expect = obj.get("expect", "agree")
        if expect not in ("agree", "diverge"):
            raise ProgramError(f"{path}: expect must be 'agree' or 'diverge'")
        return Entry(obj.get("name", name), prog, obj.get("host"), obj.get("note", ""), expect,
                     obj.get("kernel", ""))
    return Entry(name, Program.from_json(obj), None)


def save(entry: Entry, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{entry.name}.json")
    with open(path, "w") as f:
        json.dump(entry.to_json(), f, indent=1, sort_keys=False)
        f.write("\n")
    return path


def entries(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".json"))


def kernel_release() -> str:
    return platform.release()


def kernel_series(release: str) -> tuple[int, int] | None:
    """``"6.18.44-fc-v657"`` -> ``(6, 18)``; None if it does not start with
    MAJOR.MINOR."""
    parts = release.split(".", 2)
    if len(parts) < 2 or not parts[0].isdigit():
        return None
    minor = "".join(itertools.takewhile(str.isdigit, parts[1]))
    return (int(parts[0]), int(minor)) if minor else None
