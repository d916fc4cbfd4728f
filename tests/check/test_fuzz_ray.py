"""specfault fuzz on Ray: a small fuzz campaign on a local Ray instance
gives the programs, coverage, corpus and finding of one local process
(``--jobs 2`` is compared in test_fuzz.py).  Ray is an optional extra:
without it the module skips, except in CI (``CI=true``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from specfault.check.fuzz.loop import fuzz
from specfault.check.fuzz.run import FuzzConfig

if os.environ.get("CI", "").lower() != "true":
    pytest.importorskip("ray", reason="ray is an optional extra: pip install 'specfault[ray]'")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    from specfault.check.campaign import ray_init

    ray_init(num_cpus=2)
    yield
    ray.shutdown()


def _summary(out):  # type: ignore[no-untyped-def]
    f = out.failure
    return (out.programs, out.schedules, sorted(out.coverage), out.corpus, out.growth,
            out.failure_index, None if f is None else (f.program, f.protocol, f.strategy, f.kind,
                                                       f.choices))


def test_a_fuzz_campaign_on_ray_is_the_local_one(local_ray: None) -> None:
    # two batches (the second drawn from the corpus the first grew)
    cfg = FuzzConfig(("pervma",), None, 6, 11)
    local = fuzz(cfg, programs=10)
    assert local.ok and local.programs == 10 and len(local.growth) == 2
    assert _summary(fuzz(cfg, programs=10, backend="ray")) == _summary(local)


def test_a_kill_on_ray_is_the_local_kill(local_ray: None) -> None:
    # the first failing program ends the run, in program order, on Ray too
    cfg = FuzzConfig(("speculative",), "no_pte_none_recheck", 30, 0)
    local = fuzz(cfg, programs=16)
    assert not local.ok
    assert _summary(fuzz(cfg, programs=16, backend="ray", jobs=2)) == _summary(local)
