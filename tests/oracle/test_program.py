"""The program language: round trip, validation, bad input."""

from __future__ import annotations

import json

import pytest
from helpers import mmap, op, prog, touch

from specfault.oracle.program import (
    FORMAT,
    PAGE_SIZE,
    Program,
    ProgramError,
    describe,
    file_byte,
    file_contents,
)


def test_round_trip():
    p = prog(mmap(0, 4), op("fork"), touch(1, "write", proc=1, val=0x51))
    q = Program.loads(p.dumps())
    assert q == p and q.to_json()["format"] == FORMAT


@pytest.mark.parametrize("bad,msg", [
    ("not json", "not JSON"),
    ('{"format": "x"}', "format"),
    ('[]', "JSON object"),
])
def test_bad_documents(bad, msg):
    with pytest.raises(ProgramError, match=msg):
        Program.loads(bad)


@pytest.mark.parametrize("step,msg", [
    ({"op": "frobnicate"}, "unknown op"),
    ({"op": "mmap", "page": 0, "npages": 1, "prot": ["PROT_READ"]}, "needs flags"),
    ({"op": "munmap", "page": 0, "npages": 1, "bogus": 1}, "does not take bogus"),
    ({"op": "touch", "page": 0, "kind": "poke"}, "touch kind"),
    ({"op": "touch", "page": 0, "kind": "write", "val": 0}, "exec-safe"),
    ({"op": "mprotect", "page": 0, "npages": 1, "prot": ["PROT_SPLENDID"]}, "unknown prot"),
    ({"op": "exit", "proc": 1}, "not alive"),
    ({"op": "pread", "file": 3, "off": 0, "len": 8}, "no file"),
    ({"op": "mmap", "page": "x", "npages": 1, "prot": [], "flags": []}, "integer"),
])
def test_bad_steps(step, msg):
    with pytest.raises(ProgramError, match=msg):
        Program(steps=[step]).validate()


def test_processes_are_numbered_by_fork_order_and_die_on_exit():
    prog(op("fork"), op("fork", proc=1), op("exit", proc=1), touch(0, proc=2))
    with pytest.raises(ProgramError, match="not alive"):
        prog(op("fork"), op("exit", proc=1), touch(0, proc=1))


def test_file_contents_use_the_exec_safe_alphabet_and_differ_per_page():
    data = file_contents(0, 3 * PAGE_SIZE - 5)
    assert len(data) == 3 * PAGE_SIZE - 5
    assert set(data) <= set(range(0x50, 0x60))
    assert file_byte(0, 0) != file_byte(0, PAGE_SIZE) != file_byte(0, 2 * PAGE_SIZE)


def test_describe_is_one_readable_line():
    assert describe(mmap(0, 4)) == "p0 mmap page=0 npages=4 prot=RW flags=PRIVATE|ANONYMOUS|FIXED"
    assert json.loads(json.dumps(mmap(0, 4)))["op"] == "mmap"
