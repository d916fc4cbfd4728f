"""Campaigns on Ray: a local Ray instance (started once for the module)
runs a small kill table and a split search; both are identical to one
process (``--jobs 2`` is compared in test_campaign_cli/test_campaign_split).  Ray is an optional extra: without it the
module skips, except in CI (``CI=true``), which installs ``.[test,ray]``."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import pytest

from specfault.check.campaign import map_units
from specfault.check.explore import ExploreConfig, explore
from specfault.check.scenario import lookup
from specfault.check.split import explore_all, kill_unit

if os.environ.get("CI", "").lower() != "true":
    pytest.importorskip("ray", reason="ray is an optional extra: pip install 'specfault[ray]'")

#: quick to hunt with 300 schedules: two killed (by the random walk), one survives
MUTANTS = ["no_seq2_check", "vma_free_immediate", "no_pte_same_recheck_wp"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    from specfault.check.campaign import ray_init

    ray_init(num_cpus=2)
    yield
    ray.shutdown()


def _table(kills: list) -> list[dict]:
    out = []
    for k in kills:
        d = k.to_json()
        del d["seconds"]
        out.append(d)
    return out


def test_a_kill_table_on_ray_is_the_local_one(local_ray: None) -> None:
    hunt = functools.partial(kill_unit, schedules=300)
    serial = _table(map_units(hunt, MUTANTS))
    assert [k["killed"] for k in serial] == [False, True, True]
    assert _table(map_units(hunt, MUTANTS, backend="ray")) == serial     # --jobs 2: test_campaign_cli


def test_a_split_search_on_ray_is_the_serial_search(local_ray: None) -> None:
    names = ["mm.fault-vs-munmap@speculative", "mm.fault-vs-munmap@speculative+no_seq2_check"]
    cfg = ExploreConfig(strategy="dfs", max_preemptions=1, budget_seconds=None)
    serial = [explore(lookup(n), cfg) for n in names]
    split = list(explore_all(names, cfg, limit=40, backend="ray"))     # --jobs 2: test_campaign_split
    for a, b in zip(serial, split, strict=True):
        assert (a.ok, a.schedules, a.complete, a.pruned, a.steps, a.exhausted) == \
               (b.ok, b.schedules, b.complete, b.pruned, b.steps, b.exhausted)
        assert str(a.schedule) == str(b.schedule)
