"""Trace events as one line of text each, the way strace would print them
(``mmap(NULL, 0x2000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7ffff7fb6000``)."""

from __future__ import annotations

import errno as _errno
from typing import Any

from specfault import constants as C

_PROT = [(C.PROT_READ, "PROT_READ"), (C.PROT_WRITE, "PROT_WRITE"), (C.PROT_EXEC, "PROT_EXEC"),
         (C.PROT_SEM, "PROT_SEM"), (C.PROT_GROWSDOWN, "PROT_GROWSDOWN"),
         (C.PROT_GROWSUP, "PROT_GROWSUP")]
_MAP = [(C.MAP_FIXED, "MAP_FIXED"), (C.MAP_ANONYMOUS, "MAP_ANONYMOUS"), (C.MAP_32BIT, "MAP_32BIT"),
        (C.MAP_ABOVE4G, "MAP_ABOVE4G"),
        (C.MAP_GROWSDOWN, "MAP_GROWSDOWN"), (C.MAP_DENYWRITE, "MAP_DENYWRITE"),
        (C.MAP_EXECUTABLE, "MAP_EXECUTABLE"), (C.MAP_LOCKED, "MAP_LOCKED"),
        (C.MAP_NORESERVE, "MAP_NORESERVE"), (C.MAP_POPULATE, "MAP_POPULATE"),
        (C.MAP_NONBLOCK, "MAP_NONBLOCK"), (C.MAP_STACK, "MAP_STACK"), (C.MAP_HUGETLB, "MAP_HUGETLB"),
        (C.MAP_SYNC, "MAP_SYNC"), (C.MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"),
        (C.MAP_UNINITIALIZED, "MAP_UNINITIALIZED")]
_TYPES = {C.MAP_SHARED: "MAP_SHARED", C.MAP_PRIVATE: "MAP_PRIVATE",
          C.MAP_SHARED_VALIDATE: "MAP_SHARED_VALIDATE", C.MAP_DROPPABLE: "MAP_DROPPABLE"}
MADVICE = {v: k for k, v in vars(C).items() if k.startswith("MADV_") and isinstance(v, int)}
_MREMAP = [(C.MREMAP_MAYMOVE, "MREMAP_MAYMOVE"), (C.MREMAP_FIXED, "MREMAP_FIXED"),
           (C.MREMAP_DONTUNMAP, "MREMAP_DONTUNMAP")]


def bits(value: int, names: list[tuple[int, str]], zero: str = "0") -> str:
    out = []
    for bit, name in names:
        if value & bit == bit and bit:
            out.append(name)
            value &= ~bit
    if value:
        out.append(hex(value))
    return "|".join(out) or zero


def prot_str(prot: int) -> str:
    return bits(prot, _PROT, "PROT_NONE")


def mmap_flags_str(flags: int) -> str:
    kind = _TYPES.get(flags & C.MAP_TYPE, hex(flags & C.MAP_TYPE))
    rest = bits(flags & ~C.MAP_TYPE & ~(C.MAP_HUGE_MASK << C.MAP_HUGE_SHIFT), _MAP, "")
    return kind + ("|" + rest if rest else "")


def ret_str(ret: int | None, hexa: bool = True) -> str:
    if ret is None:
        return "?"
    if -4096 < ret < 0:
        return f"-1 {_errno.errorcode.get(-ret, str(-ret))}"
    return hex(ret) if hexa else str(ret)


def _s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


def access_of(err: int) -> str:
    """x86 page-fault error code -> "read" / "write" / "exec"."""
    if err & 0x10:
        return "exec"
    return "write" if err & 0x2 else "read"


def describe(ev: dict[str, Any], files: dict[int, dict[str, Any]] | None = None) -> str:
    """One line for a trace event."""
    k = ev["k"]
    who = f"[{ev['tid']}]"
    if k == "sys":
        name, a = ev["name"], ev["args"]
        ret = ev.get("ret")
        if name == "mmap" and len(a) >= 6:
            fd = _s32(a[4])
            fname = ""
            if "file" in ev and files is not None and ev["file"] in files:
                fname = f"<{files[ev['file']]['name']}>"
            args = (f"{hex(a[0]) if a[0] else 'NULL'}, {a[1]:#x}, {prot_str(a[2])}, "
                    f"{mmap_flags_str(a[3])}, {fd}{fname}, {a[5]:#x}")
        elif name in ("mprotect", "pkey_mprotect") and len(a) >= 3:
            args = f"{a[0]:#x}, {a[1]:#x}, {prot_str(a[2])}" + (f", {_s32(a[3])}" if len(a) > 3 else "")
        elif name == "munmap" and len(a) >= 2:
            args = f"{a[0]:#x}, {a[1]:#x}"
        elif name == "madvise" and len(a) >= 3:
            args = f"{a[0]:#x}, {a[1]:#x}, {MADVICE.get(_s32(a[2]), a[2])}"
        elif name == "mremap" and len(a) >= 5:
            args = f"{a[0]:#x}, {a[1]:#x}, {a[2]:#x}, {bits(a[3], _MREMAP)}, {a[4]:#x}"
        elif name == "brk" and a:
            args = hex(a[0]) if a[0] else "NULL"
        else:
            args = ", ".join(hex(x) for x in a)
        return f"{who} {name}({args}) = {ret_str(ret)}"
    if k == "fault":
        where = "user" if ev.get("user") else "kernel"
        sig = ev.get("sig")
        tail = f" -> {'SIGSEGV' if sig[0] == 11 else 'SIGBUS'} code {sig[1]}" if sig else ""
        ip = f" ip {ev['ip']:#x}" if ev.get("ip", -1) >= 0 else ""
        return f"{who} {where} {access_of(ev['err'])} fault at {ev['addr']:#x} (error {ev['err']:#x}){ip}{tail}"
    if k == "exec":
        return f"{who} exec {ev['path']} ({len(ev['maps'])} mappings)"
    if k == "clone":
        flags = ev.get("flags")
        return (f"{who} {ev.get('syscall', 'clone')}(flags {flags:#x}) = {ev['child']}" if flags is not None
                else f"{who} clone = {ev['child']} (flags unknown)")
    if k == "exit":
        return f"{who} exit" + (" (last of its group)" if ev.get("group_dead") else "")
    if k == "signal":
        return f"{who} signal {ev['sig']} code {ev.get('code')} (not from a recorded fault)"
    return f"{who} {k}"


def map_str(m: list[Any], files: dict[int, dict[str, Any]] | None = None) -> str:
    start, end, perm, off, fid, name = m
    if fid >= 0 and files is not None and fid in files:
        name = files[fid]["name"]
    return f"{start:012x}-{end:012x} {perm} {off:08x} {name}".rstrip()
