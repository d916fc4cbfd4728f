"""What both a program and the vocabulary need: the address layout, an
op as data, and the error a bad program raises (see :mod:`.program`)."""

from __future__ import annotations

from dataclasses import dataclass

PAGE = 4096
#: the window's middle is this PMD boundary (2 MiB aligned, not 1 GiB: the
#: two PTE tables share their upper levels)
PMD_BOUNDARY = 0x7F0000200000
#: the far window starts this many pages below the window
FAR_OFFSET = 64

#: the largest program accepted (what :meth:`Program.check` enforces)
MAX_THREADS = 4
MAX_OPS = 8           # per thread
MAX_SETUP = 12
MAX_WINDOW = 8
MAX_FILE_PAGES = 8
#: the most free frames memory pressure leaves (``free=N``)
MAX_FREE = 8

Arg = int | str


def window_base(window: int) -> int:
    return PMD_BOUNDARY - (window // 2) * PAGE


def page_addr(window: int, slot: int) -> int:
    """The address of page slot ``slot`` (see the module doc)."""
    if slot < window:
        return window_base(window) + slot * PAGE
    return window_base(window) - FAR_OFFSET * PAGE + (slot - window) * PAGE


def regions(window: int) -> list[tuple[int, int]]:
    """The observed ranges: the window and the far window."""
    base = window_base(window)
    far = base - FAR_OFFSET * PAGE
    return [(base, base + window * PAGE), (far, far + window * PAGE)]


class ProgramError(ValueError):
    """A program that does not parse or does not fit the vocabulary."""


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[Arg, ...] = ()

    def text(self) -> str:
        return f"{self.name}({','.join(str(a) for a in self.args)})"

    def __str__(self) -> str:
        return self.text()
