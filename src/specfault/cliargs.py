"""Argument checking shared by every ``specfault`` subcommand.

Every argument is checked before any work starts.  The functions here are
argparse ``type=`` functions (or factories returning one): each returns the
converted value or raises ``argparse.ArgumentTypeError`` with a message that
states the valid range; argparse prefixes the argument's name, and the
parser (``cli._Parser``) prints that one line on stderr and exits with 2.
A check that needs several arguments (or a default, which argparse does not
convert) raises :class:`BadArgument` from the handler; ``cli.main`` prints it
the same way.

Sizes the user can raise are bounded by an estimate of the memory they need
(``--max-memory``, default :func:`default_memory_limit`): each subcommand
documents its estimate in ``--help``.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: seeds are non-negative 63-bit integers (they are printed in schedule lines)
SEED_MAX = (1 << 63) - 1
#: the longest time cap accepted (a week), in seconds
DURATION_MAX = 7 * 24 * 3600.0


class BadArgument(Exception):
    """An argument (or a combination) the command refuses: exit 2."""

    def __init__(self, arg: str, message: str) -> None:
        super().__init__(f"argument {arg}: {message}")
        self.arg = arg


def fmt(n: float) -> str:
    """1000000 -> '1,000,000'; 0.5 -> '0.5'."""
    if float(n).is_integer():
        return f"{int(n):,}"
    return f"{n:g}"


def int_range(lo: int, hi: int, what: str = "an integer") -> Callable[[str], int]:
    """An integer in [lo, hi]."""
    def conv(text: str) -> int:
        try:
            value = int(text.strip().replace("_", ""), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} in {fmt(lo)}..{fmt(hi)}, "
                                             f"not {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {fmt(lo)}..{fmt(hi)}, not {fmt(value)}")
        return value
    conv.__name__ = "integer"
    return conv


def seed(text: str) -> int:
    """A seed: an integer in 0..2**63-1."""
    return int_range(0, SEED_MAX, "a seed")(text)


def finite_float(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    left = "(" if lo_open else "["

    def conv(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {left}{fmt(lo)}, {fmt(hi)}], "
                                             f"not {text!r}") from None
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            raise argparse.ArgumentTypeError(f"must be a finite number in {left}{fmt(lo)}, "
                                             f"{fmt(hi)}], not {text!r}")
        return value
    conv.__name__ = "number"
    return conv


def duration(text: str) -> float:
    """Seconds: ``30``, ``30s``, ``500ms``, ``2m``; finite, > 0, at most a week."""
    t = text.strip().lower()
    mult = 1.0
    if t.endswith("ms"):
        t, mult = t[:-2], 0.001
    elif t.endswith("s"):
        t = t[:-1]
    elif t.endswith("m"):
        t, mult = t[:-1], 60.0
    elif t.endswith("h"):
        t, mult = t[:-1], 3600.0
    try:
        value = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30, 30s, 500ms or 2m)") from None
    if not math.isfinite(value) or value <= 0 or value > DURATION_MAX:
        raise argparse.ArgumentTypeError(f"must be a duration > 0 and at most a week, not {text!r}")
    return value


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size(text: str) -> int:
    """Bytes: ``512M``, ``4G``, ``1.5g``, ``100000000``; at least 64 MiB."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    num = t[: len(t) - len(unit)]
    try:
        value = float(num) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 512M or 4G)") from None
    if not math.isfinite(value) or value < 64 << 20 or value > 1 << 50:
        raise argparse.ArgumentTypeError(f"must be a size of at least 64M, not {text!r}")
    return int(value)


def human(nbytes: float) -> str:
    """2.5e9 -> '2.3 GiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def default_memory_limit() -> int:
    """Half of this machine's memory, at most 4 GiB: what a run may estimate
    it needs before it is refused (``--max-memory`` raises it)."""
    try:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        phys = 8 << 30
    return int(min(4 << 30, phys // 2))


def check_memory(arg: str, need: float, limit: int, what: str) -> None:
    """Refuse (BadArgument naming ``arg``) when ``need`` bytes exceed ``limit``."""
    if need > limit:
        raise BadArgument(arg, f"{what} needs about {human(need)} of memory, over the limit of "
                               f"{human(limit)} (--max-memory)")


def close_matches(word: str, known: Iterable[str], n: int = 3) -> str:
    """'; did you mean a, b?' (at most ``n``) or ''."""
    hits = difflib.get_close_matches(word, list(known), n=n, cutoff=0.6)
    return f" (did you mean {', '.join(hits)}?)" if hits else ""


def choice(known: Iterable[str], what: str, extra: tuple[str, ...] = ()) -> Callable[[str], str]:
    """A name from ``known`` (or ``extra``); unknown: a few close matches, not the list."""
    names = list(known)

    def conv(text: str) -> str:
        if text in names or text in extra:
            return text
        listing = f"; choose from {', '.join([*names, *extra])}" if len(names) + len(extra) <= 8 else ""
        raise argparse.ArgumentTypeError(f"unknown {what} {text!r}{close_matches(text, [*names, *extra])}"
                                         f"{listing}")
    conv.__name__ = what
    return conv


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` with a non-empty key."""
    key, eq, val = text.partition("=")
    if not eq or not key.strip() or not val.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key.strip(), val.strip()


def parse_value(text: str) -> Any:
    """A KEY=VALUE value: true/false, an integer, a finite float, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


# ---- files ----
def _existing_ancestor(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _can_write_in(d: Path) -> str | None:
    """Why nothing can be created in directory ``d`` (None: it can)."""
    if not d.is_dir():
        return f"{d} is not a directory"
    try:
        tempfile.TemporaryFile(dir=d).close()
    except OSError as exc:
        return f"cannot write in {d}: {exc.strerror or exc}"
    return None


def writable_dir(text: str) -> Path:
    """A directory to write into: it exists and is writable, or it can be
    created (its nearest existing ancestor is a writable directory)."""
    p = Path(text).expanduser()
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, not ''")
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    why = _can_write_in(_existing_ancestor(p))
    if why:
        raise argparse.ArgumentTypeError(why)
    return p


def writable_file(exts: Iterable[str] | None = None, what: str = "file") -> Callable[[str], Path]:
    """A file to write: its directory exists and is writable, it is not a
    directory, and (``exts``) its extension is one of ``exts``."""
    allowed = None if exts is None else sorted(set(exts))

    def conv(text: str) -> Path:
        p = Path(text).expanduser()
        if not text.strip() or text.endswith(os.sep):
            raise argparse.ArgumentTypeError(f"expected a {what} name, not {text!r}")
        if allowed is not None:
            ext = p.suffix.lower().lstrip(".")
            if ext not in allowed:
                raise argparse.ArgumentTypeError(
                    f"{what} extension {('.' + ext) if ext else '(none)'} is not one of "
                    f"{', '.join('.' + e for e in allowed)}")
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory")
        parent = p.absolute().parent
        if not parent.exists():
            raise argparse.ArgumentTypeError(f"directory {parent} does not exist")
        why = _can_write_in(parent)
        if why:
            raise argparse.ArgumentTypeError(why)
        if p.exists():
            try:
                with open(p, "r+b"):
                    pass
            except OSError as exc:
                raise argparse.ArgumentTypeError(f"cannot write {text}: {exc.strerror}") from None
        return p
    conv.__name__ = what
    return conv


def plot_formats() -> list[str]:
    """The file extensions matplotlib can save to."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def plot_file(text: str) -> Path:
    """A plot to write: a writable place, an extension matplotlib knows."""
    return writable_file(plot_formats(), "plot file")(text)


def read_text(text: str, max_bytes: int, what: str = "file") -> str:
    """The contents of a readable regular UTF-8 text file of at most ``max_bytes``."""
    p = Path(text).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    try:
        nbytes = p.stat().st_size
        if nbytes > max_bytes:
            raise argparse.ArgumentTypeError(f"{text} is {human(nbytes)}, larger than any {what} "
                                             f"(at most {human(max_bytes)})")
        data = p.read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from None
    if b"\0" in data:
        raise argparse.ArgumentTypeError(f"{text} is a binary file, not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text} is not UTF-8 text (byte {exc.start}), not a {what}") from None


def one_line(message: str, limit: int = 400) -> str:
    """``message`` on one line, at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
