"""The simulator under memory pressure: reclaim is the model's mechanism
(kswapd a kernel thread on a CPU, direct reclaim in the allocating fault,
swap I/O off-CPU), so its cost is the work it does.  Figures here are in
simulated time: deterministic, the same on every machine."""

from __future__ import annotations

import pytest

from specfault.sim import run
from specfault.sim.cost import CostModel, CostProfile
from specfault.sim.engine import Engine
from specfault.sim.workloads import build

SMALL = {"faults": 1024}


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, float], object]:
    return {(p, lim): run("pressure", p, 2, limit=lim, **SMALL)
            for p in ("classic", "pervma") for lim in (2.0, 0.5, 0.25)}


def test_no_pressure_no_reclaim(runs: dict) -> None:
    r = runs[("classic", 2.0)]
    assert r.counters["pgscan_kswapd"] == r.counters["allocstall"] == r.counters["pswpin"] == 0


def test_pressure_swaps_the_second_pass_back_in(runs: dict) -> None:
    # the region is written twice; with half of it resident, the second
    # pass finds what the first left behind swapped out: major faults
    for p in ("classic", "pervma"):
        r = runs[(p, 0.5)]
        assert r.counters["pswpout"] > 0 and r.counters["pswpin"] > 0
        assert r.counters["pgmajfault"] == r.counters["pswpin"]
        assert r.counters["pgscan_kswapd"] + r.counters["pgscan_direct"] > 0


def test_reclaim_work_grows_with_what_it_scans(runs: dict) -> None:
    # less memory: more scanned, more CPU time in all (not a constant per pass)
    a, b = runs[("pervma", 0.5)], runs[("pervma", 0.25)]
    scanned = lambda r: r.counters["pgscan_kswapd"] + r.counters["pgscan_direct"]  # noqa: E731
    assert scanned(b) > scanned(a)
    assert b.cpu_busy_us > a.cpu_busy_us


def test_classic_faults_hold_the_writer_up_while_they_reclaim(runs: dict) -> None:
    # the seed's claim: a classic fault holds mmap_lock (read) across its
    # reclaim and swap-in, so the mmap writer waits; a per-VMA fault does
    # not take mmap_lock, so the writer does not
    classic, pervma = runs[("classic", 0.5)], runs[("pervma", 0.5)]
    assert classic.writer_lat["p99"] > 5 * pervma.writer_lat["p99"]
    # and without pressure the gap is much smaller
    calm = runs[("classic", 2.0)].writer_lat["p99"] / runs[("pervma", 2.0)].writer_lat["p99"]
    assert classic.writer_lat["p99"] / pervma.writer_lat["p99"] > 2 * calm


def test_the_run_ends_while_kswapd_sleeps() -> None:
    built = build("pressure", "pervma", 2, faults=1024, limit=0.5)
    kswapd = [th for th in built.engine.threads if th.daemon]
    assert [th.name for th in kswapd] == ["kswapd0"]
    built.engine.run()
    built.engine.close()
    assert built.engine.wall() == max(th.done_at for th in built.engine.threads if not th.daemon)
    assert built.engine.kernel.vmstat["kswapd_wake"] > 0


def test_no_watermarks_no_kswapd() -> None:
    built = build("pft", "classic", 2, faults=64)
    assert not any(th.daemon for th in built.engine.threads)
    built.engine.close()


def test_io_work_is_off_cpu_and_reclaim_work_is_per_page() -> None:
    p = CostProfile()
    assert set(p.io_ns) >= {"swap_read", "swap_write"}
    assert not set(p.io_ns) & set(p.work_ns)
    cm = CostModel(p, 1024, 1)
    from specfault.runtime import Work
    one = cm.charge(Work("reclaim_scan", 1), 0, 0.0)
    many = cm.charge(Work("reclaim_scan", 32), 0, 0.0)
    assert many == pytest.approx(32 * one)
    # a swap-in's wait leaves the CPU free: with io_ns raised, the faulting
    # thread's CPU time does not grow, only the elapsed time
    slow = CostProfile()
    slow.io_ns = {**slow.io_ns, "swap_read": 10 * slow.io_ns["swap_read"]}
    busy, wall = [], []
    for prof in (p, slow):
        built = build("pressure", "pervma", 1, limit=0.5, faults=512, profile=prof)
        built.engine.run()
        built.engine.close()
        busy.append(next(th.busy for th in built.engine.threads if th.name == "faulter/0"))
        wall.append(built.engine.wall())
    assert wall[1] > wall[0] * 2
    assert wall[1] - wall[0] > 5 * (busy[1] - busy[0])     # the wait is not CPU time


def test_engine_spawns_kswapd_only_with_watermarks() -> None:
    import specfault as sf
    m = sf.Machine(nr_frames=4096, watermark_min=64, swap_pages=128)
    eng = Engine(m)
    assert [th.name for th in eng.threads if th.daemon] == ["kswapd0"]
    eng.close()
