"""The fuzzer's ``pin`` op (check/fuzz/vocab.py): a long-term read-only
pin, a DMA read through it and the unpin, interleaved with other threads —
CVE-2020-29374's shape written as a fuzz program passes under every
correct protocol and fails under the mapcount rule."""

from __future__ import annotations

import pytest

from specfault.check.fuzz.program import Program
from specfault.check.fuzz.run import FuzzConfig, run_program

#: P writes page 0 and forks C1 (the page COW-shared); C1 pins it while
#: another of its threads drops it, and P writes it
CVE = ("win=2 file=0 | P.mmap(0,2,rw,anon,private,fixed,0) P.write(0) P.fork() | "
       "C1: pin(0) | C1: madvise(0,1,DONTNEED) | P: write(0)")


def test_the_pin_op_parses_and_passes_under_every_protocol() -> None:
    prog = Program.parse(CVE)
    res = run_program(prog, FuzzConfig(("classic", "speculative", "pervma", "dufour"), None, 300))
    assert res.ok, res.message


@pytest.mark.parametrize("mutant", ["cow_reuse_mapcount"])
def test_the_pin_op_finds_the_mapcount_rule(mutant: str) -> None:
    """Killed by pin isolation, or by linearizability first: the pin read
    P's tag (``T2.0``), which no order of the steps explains."""
    res = run_program(Program.parse(CVE), FuzzConfig(("classic",), mutant, 300))
    assert not res.ok
    assert "pin isolation" in res.message or "T2.0" in res.message, res.message
