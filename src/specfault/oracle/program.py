"""The oracle's program language: small, serialisable sequences of mm operations.

A program runs in a *window* of ``guard + region + guard`` pages.  The guards
are a PROT_NONE private anonymous reservation on both sides of the region;
the region itself starts unmapped.  Every address in a program is a page
number relative to the region start (page 0 is the first region page; the
guards are pages ``-guard .. -1`` and ``region .. region+guard-1``).

Processes are numbered in creation order: process 0 exists at the start and
each ``fork`` step creates the next number.  Every step names the process
that executes it (``proc``).

Files: ``files[k]`` is a file of ``size`` bytes whose byte ``i`` is
``file_byte(k, i)``.  File bytes and written bytes come from the alphabet
0x50..0x5f so that an exec touch of any page is harmless on the host (see
probe.c); the zero byte is the only other value memory can hold.

JSON shape (``format`` must be ``FORMAT``)::

    {"format": "specfault-oracle/1", "region": 64, "guard": 4,
     "files": [{"size": 32768}],
     "steps": [{"op": "mmap", "proc": 0, "page": 0, "npages": 4,
                "prot": ["PROT_READ", "PROT_WRITE"],
                "flags": ["MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_FIXED"]}, ...]}

Step fields by ``op`` (optional fields in brackets, with their default):

    mmap      page (null = addr 0), npages, prot, flags, [file null], [offset 0 pages]
    munmap    page, npages, [misalign 0 bytes added to addr]
    mprotect  page, npages, prot, [misalign 0]
    madvise   page, npages, advice
    mremap    page, npages, new_npages, [flags []], [new_page null]
    touch     page, kind (read|write|exec), [off 0], [len 8 (read)], [val 0x50 (write)]
    pread     file, off, len            read the file through a file descriptor
    pwrite    file, off, len, val       write len bytes of val through a file descriptor
    ftruncate file, size                ftruncate(2) the file's descriptor (shrink, grow, to 0)
    fallocate file, off, len, mode      fallocate(2); mode: names of FALLOC (PUNCH_HOLE|KEEP_SIZE
                                        punches a hole; the others pin errnos or allocate)
    otrunc    file                      open(2) the file with O_RDWR|O_TRUNC, then close it
    fork      (the new process gets the next number)
    exit
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FORMAT = "specfault-oracle/1"
PAGE_SIZE = 4096
#: the largest region a program may have, in pages
REGION_MAX = 4096

# Linux x86-64 values; the model exports the same numbers.
PROT = {"PROT_NONE": 0x0, "PROT_READ": 0x1, "PROT_WRITE": 0x2, "PROT_EXEC": 0x4}
MAP = {
    "MAP_SHARED": 0x01,
    "MAP_PRIVATE": 0x02,
    "MAP_FIXED": 0x10,
    "MAP_ANONYMOUS": 0x20,
    "MAP_NORESERVE": 0x4000,
    "MAP_POPULATE": 0x8000,
    "MAP_FIXED_NOREPLACE": 0x100000,
}
MADV = {"MADV_NORMAL": 0, "MADV_RANDOM": 1, "MADV_SEQUENTIAL": 2, "MADV_WILLNEED": 3,
        "MADV_DONTNEED": 4, "MADV_FREE": 8, "MADV_REMOVE": 9, "MADV_DONTFORK": 10,
        "MADV_DOFORK": 11, "MADV_MERGEABLE": 12, "MADV_UNMERGEABLE": 13, "MADV_HUGEPAGE": 14,
        "MADV_NOHUGEPAGE": 15, "MADV_DONTDUMP": 16, "MADV_DODUMP": 17, "MADV_WIPEONFORK": 18,
        "MADV_KEEPONFORK": 19, "MADV_COLD": 20, "MADV_PAGEOUT": 21, "MADV_POPULATE_READ": 22,
        "MADV_POPULATE_WRITE": 23, "MADV_DONTNEED_LOCKED": 24, "MADV_COLLAPSE": 25}
MREMAP = {"MREMAP_MAYMOVE": 1, "MREMAP_FIXED": 2, "MREMAP_DONTUNMAP": 4}
FALLOC = {"FALLOC_FL_KEEP_SIZE": 0x01, "FALLOC_FL_PUNCH_HOLE": 0x02, "FALLOC_FL_NO_HIDE_STALE": 0x04,
          "FALLOC_FL_COLLAPSE_RANGE": 0x08, "FALLOC_FL_ZERO_RANGE": 0x10,
          "FALLOC_FL_INSERT_RANGE": 0x20, "FALLOC_FL_UNSHARE_RANGE": 0x40}
#: the largest file size a program may create or truncate to
FILE_MAX = 1 << 24
TOUCH_KINDS = ("read", "write", "exec")
ALPHABET = range(0x50, 0x60)  # bytes a program may store: harmless to execute (probe.c)

_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    # op: (required fields, optional fields) besides "op" and "proc"
    "mmap": ({"page", "npages", "prot", "flags"}, {"file", "offset"}),
    "munmap": ({"page", "npages"}, {"misalign"}),
    "mprotect": ({"page", "npages", "prot"}, {"misalign"}),
    "madvise": ({"page", "npages", "advice"}, set()),
    "mremap": ({"page", "npages", "new_npages"}, {"flags", "new_page"}),
    "touch": ({"page", "kind"}, {"off", "len", "val"}),
    "pread": ({"file", "off", "len"}, set()),
    "pwrite": ({"file", "off", "len", "val"}, set()),
    "ftruncate": ({"file", "size"}, set()),
    "fallocate": ({"file", "off", "len", "mode"}, set()),
    "otrunc": ({"file"}, set()),
    "fork": (set(), set()),
    "exit": (set(), set()),
}
OPS = tuple(_FIELDS)


class ProgramError(ValueError):
    """A program that is malformed or not runnable (bad JSON, bad field, dead process)."""


def file_byte(k: int, i: int) -> int:
    """Byte ``i`` of file ``k``: one alphabet value per page, distinct between neighbours."""
    return 0x50 + ((k * 5 + i // PAGE_SIZE) % 16)


def file_contents(k: int, size: int) -> bytes:
    out = bytearray()
    for page in range((size + PAGE_SIZE - 1) // PAGE_SIZE):
        n = min(PAGE_SIZE, size - page * PAGE_SIZE)
        out += bytes([file_byte(k, page * PAGE_SIZE)]) * n
    return bytes(out)


def prot_value(names: list[str]) -> int:
    return _bits(names, PROT, "prot")


def flags_value(names: list[str], table: dict[str, int]) -> int:
    return _bits(names, table, "flags")


def _bits(names: Any, table: dict[str, int], what: str) -> int:
    if not isinstance(names, list):
        raise ProgramError(f"{what} must be a list of names, got {names!r}")
    value = 0
    for name in names:
        if name not in table:
            raise ProgramError(f"unknown {what} name {name!r} (known: {', '.join(table)})")
        value |= table[name]
    return value


@dataclass
class Program:
    """A runnable program: window geometry, files, and steps (plain dicts)."""

    steps: list[dict[str, Any]]
    region: int = 64
    guard: int = 4
    files: list[dict[str, int]] = field(default_factory=lambda: [{"size": 8 * PAGE_SIZE}])

    # ---- geometry ----
    @property
    def window_pages(self) -> int:
        return self.region + 2 * self.guard

    # ---- (de)serialisation ----
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "region": self.region, "guard": self.guard,
                "files": [dict(f) for f in self.files], "steps": [dict(s) for s in self.steps]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=None, separators=(",", ":"))

    @classmethod
    def from_json(cls, obj: Any) -> Program:
        if not isinstance(obj, dict):
            raise ProgramError("a program is a JSON object")
        if obj.get("format") != FORMAT:
            raise ProgramError(f"format must be {FORMAT!r}, got {obj.get('format')!r}")
        steps, files = obj.get("steps", []), obj.get("files", [])
        if not isinstance(steps, list) or not isinstance(files, list):
            raise ProgramError("steps and files must be lists")
        prog = cls(steps=list(steps), region=obj.get("region", 64),
                   guard=obj.get("guard", 4), files=list(files))
        prog.validate()
        return prog

    @classmethod
    def loads(cls, text: str) -> Program:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProgramError(f"not JSON: {exc}") from None
        return cls.from_json(obj)

    def replace_steps(self, steps: list[dict[str, Any]]) -> Program:
        return Program(steps=[dict(s) for s in steps], region=self.region, guard=self.guard,
                       files=[dict(f) for f in self.files])

    # ---- validation ----
    def validate(self) -> None:
        """Raise ProgramError unless every step is well formed and runnable in order."""
        _int(self.region, "region", 1, REGION_MAX)
        _int(self.guard, "guard", 1, 512)
        if not isinstance(self.files, list):
            raise ProgramError("files must be a list")
        for k, f in enumerate(self.files):
            if not isinstance(f, dict) or set(f) != {"size"}:
                raise ProgramError(f"files[{k}] must be {{'size': bytes}}")
            _int(f["size"], f"files[{k}].size", 0, 1 << 24)
        if not isinstance(self.steps, list):
            raise ProgramError("steps must be a list")
        live = {0}
        nprocs = 1
        for i, step in enumerate(self.steps):
            where = f"step {i}"
            if not isinstance(step, dict):
                raise ProgramError(f"{where}: a step is an object")
            op = step.get("op")
            if op not in _FIELDS:
                raise ProgramError(f"{where}: unknown op {op!r} (known: {', '.join(OPS)})")
            required, optional = _FIELDS[op]
            keys = set(step) - {"op", "proc"}
            if missing := required - keys:
                raise ProgramError(f"{where}: {op} needs {', '.join(sorted(missing))}")
            if extra := keys - required - optional:
                raise ProgramError(f"{where}: {op} does not take {', '.join(sorted(extra))}")
            proc = step.get("proc", 0)
            if not isinstance(proc, int) or proc not in live:
                raise ProgramError(f"{where}: process {proc!r} is not alive here")
            self._validate_fields(step, where)
            if op == "fork":
                live.add(nprocs)
                nprocs += 1
            elif op == "exit":
                live.discard(proc)

    def _validate_fields(self, s: dict[str, Any], where: str) -> None:
        lo, hi = -self.guard - 4096, self.region + self.guard + 4096
        op = s["op"]
        if "page" in s and not (op == "mmap" and s["page"] is None):
            _int(s["page"], f"{where}: page", lo, hi)
        if "npages" in s:
            _int(s["npages"], f"{where}: npages", 0, 4096)
        if "new_npages" in s:
            _int(s["new_npages"], f"{where}: new_npages", 0, 4096)
        if s.get("new_page") is not None:
            _int(s["new_page"], f"{where}: new_page", lo, hi)
        if "misalign" in s:
            _int(s["misalign"], f"{where}: misalign", 0, PAGE_SIZE - 1)
        if "prot" in s:
            prot_value(s["prot"])
        if op == "mmap":
            flags_value(s["flags"], MAP)
            if s.get("file") is not None:
                self._file(s["file"], where)
            _int(s.get("offset", 0), f"{where}: offset", 0, 1 << 20)
        if op == "mremap":
            flags_value(s.get("flags", []), MREMAP)
        if op == "madvise" and s["advice"] not in MADV:
            raise ProgramError(f"{where}: unknown advice {s['advice']!r} (known: {', '.join(MADV)})")
        if op == "touch":
            if s["kind"] not in TOUCH_KINDS:
                raise ProgramError(f"{where}: touch kind must be one of {TOUCH_KINDS}")
            # an exec touch runs one instruction (<= 4 bytes in the alphabet): keep it in the page
            _int(s.get("off", 0), f"{where}: off", 0, PAGE_SIZE - 16 if s["kind"] == "exec" else PAGE_SIZE - 1)
            _int(s.get("len", 8), f"{where}: len", 1, PAGE_SIZE - s.get("off", 0))
            _val(s.get("val", ALPHABET[0]), where)
        if op in ("pread", "pwrite"):
            self._file(s["file"], where)
            _int(s["off"], f"{where}: off", 0, 1 << 24)
            _int(s["len"], f"{where}: len", 0, 1 << 16)
        if op == "pwrite":
            _val(s["val"], where)
        if op in ("ftruncate", "fallocate", "otrunc"):
            self._file(s["file"], where)
        if op == "ftruncate":
            _int(s["size"], f"{where}: size", 0, FILE_MAX)
        if op == "fallocate":
            _int(s["off"], f"{where}: off", 0, FILE_MAX)
            _int(s["len"], f"{where}: len", 0, FILE_MAX)
            flags_value(s["mode"], FALLOC)

    def _file(self, k: Any, where: str) -> None:
        if not isinstance(k, int) or not 0 <= k < len(self.files):
            raise ProgramError(f"{where}: no file {k!r} (the program has {len(self.files)})")


def _int(v: Any, what: str, lo: int, hi: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProgramError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")


def _val(v: Any, where: str) -> None:
    if not isinstance(v, int) or v not in ALPHABET:
        raise ProgramError(f"{where}: val must be in 0x50..0x5f (exec-safe alphabet), got {v!r}")


def describe(step: dict[str, Any]) -> str:
    """One line for a step, e.g. ``p0 mmap page=0 npages=4 prot=RW flags=PRIVATE|ANONYMOUS|FIXED``."""
    parts = [f"p{step.get('proc', 0)}", str(step["op"])]
    for key, val in step.items():
        if key in ("op", "proc"):
            continue
        if key == "prot":
            val = "".join(n[5] for n in val if n != "PROT_NONE") or "NONE"
        elif key in ("flags", "mode"):
            val = "|".join(n.split("_", 2 if n.startswith("FALLOC") else 1)[-1] for n in val) or "0"
        elif key == "advice":
            val = val.split("_", 1)[1]
        elif key == "val":
            val = hex(val)
        parts.append(f"{key}={val}")
    return " ".join(parts)
