"""The oracle catches deliberately wrong *models* (not just perturbed records).

Each variant runs the real model with one behaviour broken -- fault-around
off (a Config knob), merging off, the zero page off (patched model
functions) -- against recorded host results, and the oracle must report a
divergence of the right kind.  The unbroken model must not diverge on the
same entries (checked in test_corpus.py).
"""

from __future__ import annotations

import os

import pytest

from specfault.oracle import corpus
from specfault.oracle.compare import judge
from specfault.oracle.model import run_model

CORPUS = os.path.join(os.path.dirname(__file__), "..", "oracle_corpus")


def verdict(name, machine_factory=None):
    e = corpus.load(os.path.join(CORPUS, f"{name}.json"))
    return judge(e.program, e.host, run_model(e.program, machine_factory))


def test_unbroken_model_agrees_on_the_mutant_targets(model_ready):
    for name in ("agree-fault-around-file-read", "agree-merge-adjacent-anon", "agree-zero-page-then-write"):
        assert verdict(name).status == "agree", name


def test_fault_around_disabled_is_caught(model_ready):
    import specfault
    from specfault.config import Config

    v = verdict("agree-fault-around-file-read",
                lambda: specfault.Machine(nr_frames=65536, config=Config(fault_around_bytes=4096)))
    assert v.status == "diverge" and v.divergence is not None
    assert v.divergence.what in ("pages", "smaps")


def test_merge_disabled_is_caught(model_ready, monkeypatch):
    import specfault.mm.mmap as mmap_mod

    if not hasattr(mmap_mod, "vma_merge_new_range"):
        pytest.skip("the model's mmap no longer calls vma_merge_new_range; update this mutant")

    async def never_merge(*args, **kwargs):
        return None

    monkeypatch.setattr(mmap_mod, "vma_merge_new_range", never_merge)
    v = verdict("agree-merge-adjacent-anon")
    assert v.status == "diverge" and v.divergence is not None
    assert (v.divergence.step, v.divergence.what) == (1, "maps")


def test_zero_page_disabled_is_caught(model_ready, monkeypatch):
    import specfault.mm.memory as memory
    from specfault.mm import fault_flags

    if not hasattr(memory, "do_anonymous_page") or not hasattr(fault_flags, "FAULT_FLAG_WRITE"):
        pytest.skip("the model's anonymous fault path changed; update this mutant")
    original = memory.do_anonymous_page

    async def no_zero_page(vmf):
        vmf.flags |= fault_flags.FAULT_FLAG_WRITE    # every first touch allocates a frame
        return await original(vmf)

    monkeypatch.setattr(memory, "do_anonymous_page", no_zero_page)
    v = verdict("agree-zero-page-then-write")
    assert v.status == "diverge" and v.divergence is not None
    assert v.divergence.step == 1 and v.divergence.what in ("pages", "smaps")
