"""Output files named on the command line (``--trace FILE``, ``--html
FILE``): checked by argparse before any work starts, so a run of minutes
is not lost to a typo in a directory name."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def output_file(exts: Iterable[str], what: str) -> Callable[[str], Path]:
    """An argparse ``type=``: a file name whose directory exists and is
    writable, that is not a directory, with one of the extensions ``exts``."""
    allowed = sorted({e.lower().lstrip(".") for e in exts})

    def conv(text: str) -> Path:
        if not text.strip() or text.endswith(os.sep):
            raise argparse.ArgumentTypeError(f"expected a {what} file name, not {text!r}")
        p = Path(text).expanduser()
        ext = p.suffix.lower().lstrip(".")
        if ext not in allowed:
            raise argparse.ArgumentTypeError(
                f"{what} file extension {('.' + ext) if ext else '(none)'} is not one of "
                f"{', '.join('.' + e for e in allowed)}")
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory")
        parent = p.absolute().parent
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"cannot write in {parent}")
        if p.exists() and not os.access(p, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write {text}")
        return p
    conv.__name__ = what
    return conv


trace_file = output_file(("json",), "trace")
html_file = output_file(("html", "htm"), "HTML report")
