"""Memory stays bounded in a fuzz run, whatever it explores.

``benchmarks/fuzz_kill_table.py`` once grew to 12.8 GB: truncation walked
an mm's VMAs without any lock and met a VMA a ``MAP_FIXED`` was splitting
(``vm_end`` moved, the tree not yet), looping inside one step.  Truncation
now walks the file's ``i_mmap`` under ``i_mmap_rwsem``, which the splitters
hold for write (tests/mm/test_truncate.py, the ``truncate-vs-split``
race).  This test pins the size of what a fuzz run keeps, by counts."""

from __future__ import annotations

import specfault as sf
from specfault.check.campaign import PAUSE, Campaign
from specfault.check.fuzz.loop import MAX_CORPUS, FuzzResult, _merge
from specfault.check.fuzz.program import Program
from specfault.check.fuzz.run import FuzzConfig, ProgramResult

P = 4096
RW = sf.PROT_READ | sf.PROT_WRITE


def test_a_fuzz_run_keeps_a_bounded_corpus_and_nothing_per_program() -> None:
    """After N programs the run keeps its coverage (a finite set), at most
    MAX_CORPUS programs and one failure — no per-program results (the
    campaign is not asked to keep what it handed back)."""
    prog = Program.parse("win=1 file=0 | P.mmap(0,1,rw,anon,private,fixed,0) | P: read(0)")
    out = FuzzResult(FuzzConfig(("classic",)))
    n = MAX_CORPUS + 50
    for i in range(n):
        # every program new coverage: the corpus would grow without its cap
        _merge(out, ProgramResult(prog, True, 1, (("classic", str(i), "-", "-", "-"),)))
    assert out.programs == n and len(out.corpus) == MAX_CORPUS
    with Campaign(_square, iter([1, 2, PAUSE, 3]), jobs=1) as run:
        for _ in run:
            pass
        assert not run.kept and not run.done


def _square(x: int) -> int:
    return x * x
