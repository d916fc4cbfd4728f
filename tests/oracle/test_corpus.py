"""Replay every saved program in tests/oracle_corpus on both sides.

Against the live host kernel when there is one (and then the kernel must
still do what was recorded, if it is of the recording's kernel series,
major.minor), otherwise against the recorded host result -- so the result is the same on
every machine.  Entries with ``expect: diverge`` record an open model bug:
they are expected failures until the model is fixed (then flip them).
"""

from __future__ import annotations

import os

import pytest

from specfault.oracle import corpus
from specfault.oracle.compare import first_divergence, format_divergence, judge
from specfault.oracle.model import run_model

CORPUS = os.path.join(os.path.dirname(__file__), "..", "oracle_corpus")
PATHS = corpus.entries(CORPUS)


def test_corpus_is_not_empty_and_loads():
    assert PATHS
    for path in PATHS:
        e = corpus.load(path)
        assert e.host is not None, f"{path}: no recorded host result"
        assert e.host["error"] is None
        assert len(e.host["steps"]) == len(e.program.steps)


@pytest.mark.parametrize("path", PATHS, ids=[os.path.basename(p)[:-5] for p in PATHS])
def test_recorded_host_result_still_holds(path, host_runner):
    e = corpus.load(path)
    here = corpus.kernel_release()
    if corpus.kernel_series(e.kernel) != corpus.kernel_series(here) or corpus.kernel_series(here) is None:
        pytest.skip(f"recorded on kernel {e.kernel}, this is {here}: another major.minor")
    live = host_runner.run(e.program)
    d = first_divergence(e.host, live)
    assert d is None, f"the host kernel no longer does what was recorded: {d}"


def test_kernel_series_is_major_minor():
    assert corpus.kernel_series("6.18.44-fc-v657") == corpus.kernel_series("6.18.44-fc-v857") == (6, 18)
    assert corpus.kernel_series("6.18-rc3") == (6, 18) and corpus.kernel_series("6.1.0") == (6, 1)
    assert corpus.kernel_series("6.19.2") != corpus.kernel_series("6.18.44")
    assert corpus.kernel_series("unknown") is None


@pytest.mark.parametrize("path", PATHS, ids=[os.path.basename(p)[:-5] for p in PATHS])
def test_model_agrees_with_host(path, model_ready, request):
    e = corpus.load(path)
    if e.expect == "diverge":
        request.applymarker(pytest.mark.xfail(reason=f"open model bug: {e.note}", strict=False))
    model = run_model(e.program)
    v = judge(e.program, e.host, model)
    assert v.status in ("agree", "known"), format_divergence(e.program, v, e.host, model)
