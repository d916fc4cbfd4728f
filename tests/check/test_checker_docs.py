"""docs/explorer.md, "Checking your own protocol": every code block that
is a file (its first line ``# NAME.py``) runs as that file, and prints
exactly the ``text`` block that follows it; the command lines shown for it
give what the doc says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "explorer.md"


def _files() -> list[tuple[str, str, str]]:
    text = DOC.read_text()
    section = text[text.index("## Checking your own protocol"):]
    section = section[:section.index("\n## ", 5)]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    out = []
    for i, (lang, body) in enumerate(blocks):
        m = re.match(r"# (\w+\.py)", body)
        if lang == "python" and m:
            nxt = blocks[i + 1]
            assert nxt[0] == "text", f"{m.group(1)}: no output block after it"
            out.append((m.group(1), body, nxt[1]))
    return out


FILES = _files()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_tutorial_has_both_protocols() -> None:
    assert [f for f, _, _ in FILES] == ["ticket.py", "seqlock.py"]


@pytest.mark.parametrize("name,code,expected", FILES, ids=[f for f, _, _ in FILES])
def test_tutorial_file_prints_what_the_doc_shows(name: str, code: str, expected: str,
                                                 tmp_path: Path) -> None:
    (tmp_path / name).write_text(code)
    r = _run([name], tmp_path)
    assert r.returncode == 0, r.stderr
    got = [line.rstrip() for line in r.stdout.splitlines()]
    assert got == expected.rstrip("\n").splitlines()


def test_tutorial_command_lines(tmp_path: Path) -> None:
    code = next(c for f, c, _ in FILES if f == "ticket.py")
    (tmp_path / "ticket.py").write_text(code)
    cli = ["-c", "from specfault.cli import main; raise SystemExit(main())", "check"]
    bad = _run([*cli, "ticket.py:broken"], tmp_path)
    assert bad.returncode == 1 and "VIOLATION property: T1: 2 threads hold the ticket lock" in bad.stdout
    good = _run([*cli, "ticket.py:correct"], tmp_path)
    assert good.returncode == 0 and "OK — portfolio, 88 schedules (" in good.stdout
    assert good.stdout.rstrip().endswith("exhaustive")
    pct = _run([*cli, "ticket.py:broken", "--strategy", "pct", "--pct-depth", "2", "--schedules", "500"],
               tmp_path)
    assert pct.returncode == 1 and "— pct," in pct.stdout
