"""Memory stays bounded in a fuzz run, whatever it explores.

``benchmarks/fuzz_kill_table.py`` once grew to 12.8 GB: truncation walks
an mm's VMAs without mmap_lock (``mm/truncate.py: vmas_mapping``), and a
fuzz program's ``mmap(MAP_FIXED)`` splitting a file VMA beside an
``ftruncate`` left it a VMA whose ``vm_end`` had moved while the tree
still held the old range: ``addr = vma.vm_end`` never advanced and the
walk appended the same VMA for ever, inside one step (where no step limit
reaches).  These tests pin the walk's progress, and the size of what a
fuzz run keeps, by counts — they fail at once if it regresses, rather than
hanging."""

from __future__ import annotations

from typing import Any

import specfault as sf
from specfault.check.campaign import PAUSE, Campaign
from specfault.check.fuzz.loop import MAX_CORPUS, FuzzResult, _merge
from specfault.check.fuzz.program import Program
from specfault.check.fuzz.run import FuzzConfig, ProgramResult
from specfault.mm.truncate import vmas_mapping

P = 4096
RW = sf.PROT_READ | sf.PROT_WRITE


class _Counted:
    """The VMA tree, its lookups counted: more than ``limit`` raises."""

    def __init__(self, tree: Any, limit: int) -> None:
        self.tree, self.limit, self.calls = tree, limit, 0

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.tree, name)

        def counted(*args: Any) -> Any:
            self.calls += 1
            assert self.calls <= self.limit, f"{name}: {self.calls} lookups for 3 VMAs"
            return fn(*args)

        return counted


def test_truncation_walks_past_a_vma_being_split() -> None:
    m = sf.Machine()
    m.create_file("/f", b"x" * 4 * P)
    p = m.spawn()
    fd = p.open("/f", sf.O_RDWR)
    base = p.mmap(0, 4 * P, RW, sf.MAP_PRIVATE, fd)
    p.mmap(base - 8 * P, P, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    p.mmap(base + 8 * P, P, RW, sf.MAP_PRIVATE, fd)
    mm = p.mm
    vma = mm.find_vma(base)
    # __split_vma's torn state, as a lockless walker sees it: vm_end moved,
    # the tree not yet updated
    vma.vm_end = base + P
    tree, mm.mm_mt = mm.mm_mt, _Counted(mm.mm_mt, 16)
    try:
        found = vmas_mapping(mm, vma.vm_file.inode)
    finally:
        mm.mm_mt = tree
        vma.vm_end = base + 4 * P
    assert [v.vm_start for v in found] == [base, base + 8 * P]


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
