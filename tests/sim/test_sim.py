"""The performance simulator: determinism, cost charging, the scaling
relations the protocols are built for, counters, and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from specfault.cli import main
from specfault.sim import WORKLOADS, CostProfile, compare, run
from specfault.sim.cost import CostModel


def test_same_seed_same_results() -> None:
    a = run("ebizzy", "speculative", 4, faults=600, seed=3).to_dict()
    b = run("ebizzy", "speculative", 4, faults=600, seed=3).to_dict()
    assert a == b


def test_engine_charges_the_cost_model() -> None:
    base = CostProfile()
    slow = replace(base, work_ns={**base.work_ns, "clear_page": base.work_ns["clear_page"] + 1000})
    a = run("pft", "classic", 1, profile=base, faults=500)
    b = run("pft", "classic", 1, profile=slow, faults=500)
    # one clear_page per fault, on one CPU: 1 µs more per fault
    assert b.wall_us - a.wall_us == pytest.approx(500 * 1.0, rel=0.05)
    assert b.fault_lat["p50"] - a.fault_lat["p50"] == pytest.approx(1.0, rel=0.05)


def test_line_transfers_serialise() -> None:
    cm = CostModel(CostProfile(line_transfer_ns=100.0), 1000, 4)
    obj = object()
    cm.touch(obj, "count", True, 0, 0.0)                  # CPU 0 owns it
    assert cm.touch(obj, "count", True, 1, 0.0) == 100.0  # transfer to CPU 1
    assert cm.touch(obj, "count", True, 2, 0.0) == 200.0  # queued behind it
    assert cm.touch(obj, "count", True, 2, 500.0) == CostProfile().op_ns   # now a hit
    # a read-shared line (a seqcount) costs nothing after the first read
    seq = object()
    cm.touch(seq, "mm_lock_seq", False, 0, 0.0)
    cm.touch(seq, "mm_lock_seq", False, 1, 0.0)
    assert cm.touch(seq, "mm_lock_seq", False, 0, 10.0) == CostProfile().op_ns


def test_classic_stops_scaling_while_spf_scales_on_pft() -> None:
    cmp = compare("pft", cpus=[8, 32], faults=8000)
    classic = cmp.get("classic", 32).faults_per_s / cmp.get("classic", 8).faults_per_s
    spf = cmp.get("speculative", 32).faults_per_s / cmp.get("speculative", 8).faults_per_s
    assert classic < 1.3, classic          # the rwsem count line is saturated
    assert spf > 2.0, spf                  # speculative faults share no written line
    assert cmp.ratio("speculative", 32) > 2.0
    # classic's faults bounce the mmap_lock line; speculative ones mostly do not
    assert cmp.get("classic", 32).transfers_per_fault > 3 * cmp.get("speculative", 32).transfers_per_fault


def test_spf_counters_add_up() -> None:
    r = run("ebizzy", "speculative", 8, faults=1500)
    c = r.counters
    assert c["spf_attempt"] > 0
    assert c["spf_attempt"] == c["spf_success"] + c["spf_abort"]
    assert sum(r.aborts.values()) >= c["spf_abort"] > 0
    assert 0 < r.abort_rate < 1


def test_no_speculation_with_one_user() -> None:
    r = run("pft", "speculative", 1, faults=200)
    assert r.counters["spf_attempt"] == 0


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_every_workload_runs_under_every_protocol(workload: str) -> None:
    small = {"spf_test": 200, "app_launch": 400, "mmap1": 200}.get(workload, 400)
    cmp = compare(workload, cpus=[4], faults=small)
    for r in cmp.runs:
        assert r.wall_us > 0
        if workload != "mmap1":
            assert r.faults > 0 and r.fault_lat["max"] >= r.fault_lat["p50"] > 0
        else:
            assert r.syscalls > 0


def test_app_launch_writers_wait_for_faults_under_classic() -> None:
    cmp = compare("app_launch", cpus=[4], faults=1200)
    classic, spf = cmp.get("classic", 4), cmp.get("speculative", 4)
    assert classic.reclaims > 0                      # memory is below the watermark
    assert classic.writer_lat["max"] > 0
    assert classic.lock_wait["max"] > spf.lock_wait["max"] * 0.5


def test_profile_json_round_trip(tmp_path) -> None:
    p = CostProfile(line_transfer_ns=123.0)
    path = tmp_path / "prof.json"
    p.save(path)
    assert CostProfile.load(path) == p
    path.write_text(json.dumps({"bogus": 1}))
    with pytest.raises(ValueError, match="bogus"):
        CostProfile.load(path)


def test_cli_bench(capsys, tmp_path) -> None:
    plot = tmp_path / "p.png"
    assert main(["bench", "-w", "pft", "--cpus", "1,2", "--faults", "200", "--json",
                 "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["protocol"] for r in out["runs"]} == {"classic", "speculative", "pervma"}
    assert plot.stat().st_size > 0


@pytest.mark.parametrize("argv", [
    ["bench", "-w", "nope"],
    ["bench", "--cpus", "0"],
    ["bench", "--cpus", "a,b"],
    ["bench", "--protocols", "classic,magic"],
    ["bench", "--param", "nope=1"],
    ["bench", "--faults", "0"],
    ["bench", "--profile", "/nonexistent/profile.json"],
])
def test_cli_bad_input_exits_2(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_pft_vma_per_thread_gives_each_thread_its_own_vma() -> None:
    from specfault.sim.workloads import pft

    built = pft("classic", 4, faults=200, vma_per_thread=True)
    try:
        mm = built.engine.threads[0].task.mm
        vmas = list(mm.vmas())
        assert len(vmas) == 4                             # guard pages keep them apart
        assert all(v.anon_vma is not None for v in vmas)  # as after a first fault
    finally:
        built.engine.close()


def test_pervma_scales_like_spf_when_each_thread_has_its_own_vma() -> None:
    one = compare("pft", cpus=[16], faults=4000)
    own = compare("pft", cpus=[16], faults=4000, vma_per_thread=True)
    # one VMA: the VMA refcount line bounces as mmap_lock's count does
    assert one.ratio("pervma", 16) == pytest.approx(1.0, abs=0.15)
    # a VMA per thread: no written line is shared, per-VMA locks scale
    assert own.ratio("pervma", 16) > 2.0
    assert own.get("pervma", 16).transfers_per_fault < 0.5 * own.get("classic", 16).transfers_per_fault
    # classic does not care how the region is split
    assert own.ratio("classic", 16) == 1.0
    c1, c2 = one.get("classic", 16).faults_per_s, own.get("classic", 16).faults_per_s
    assert c2 == pytest.approx(c1, rel=0.15)


def test_spf_vma_refcount_knob_costs_a_shared_line_on_one_vma() -> None:
    """Dufour's per-attempt VMA refcount (knob spf_vma_refcount): on pft's
    single VMA the refcount line bounces like a lock count, so most of
    SPF's gain is lost (Lespinasse: "one atomic per-VMA refcount would
    cost 62%"); the refcount is balanced after the run."""
    from specfault.config import Config
    from specfault.sim.workloads import build

    seq = run("pft", "speculative", 16, faults=4000)
    ref = run("pft", "speculative", 16, faults=4000, knobs={"spf_vma_refcount": True})
    classic = run("pft", "classic", 16, faults=4000)
    assert ref.faults_per_s < 0.75 * seq.faults_per_s
    assert ref.transfers_per_fault > 1.0 > seq.transfers_per_fault
    assert ref.faults_per_s > 0.8 * classic.faults_per_s
    built = build("pft", "speculative", 4, faults=300, config=Config(knobs={"spf_vma_refcount": True}))
    built.engine.run()
    mm = built.engine.threads[0].task.mm
    assert mm.config.knob("spf_vma_refcount") is True
    assert all(v.vm_ref_count == 0 for v in mm.vmas())


def test_spf_vma_refcount_is_off_by_default() -> None:
    r = run("pft", "speculative", 4, faults=300)
    assert r.counters["spf_success"] > 0
    from specfault.config import Config
    assert Config().knob("spf_vma_refcount") is False


def test_cli_knob_and_bool_param(capsys) -> None:
    assert main(["bench", "-w", "pft", "--cpus", "2", "--faults", "100", "--json",
                 "--protocols", "speculative", "--param", "vma_per_thread=true",
                 "--knob", "spf_vma_refcount=true"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["vma_per_thread"] is True
    assert out["params"]["knobs"] == {"spf_vma_refcount": True}
    assert main(["bench", "--knob", "novalue"]) == 2


def test_queued_writers_do_their_vma_work_inside_the_write_section() -> None:
    """vma_modify_ns is the VMA work done while holding mmap_lock for write:
    two threads doing mmap/munmap serialise it — including the writer that
    had to queue (it must not do its work while waiting)."""
    work = 100_000.0
    prof = replace(CostProfile(), vma_modify_ns=work)
    r = run("mmap1", "classic", 2, profile=prof, faults=40)   # 2 threads x 2 mmap+munmap
    assert r.syscalls == 8
    assert r.wall_us * 1e3 >= 8 * work
    assert r.lock_hold["p50"] * 1e3 >= work


def _gate_run(spins: bool) -> tuple[float, float]:
    """Thread A waits at a blocking op (kind "gate", whatever ``spins``
    says) until B, on the other CPU, opens the gate after 10 µs of work;
    returns A's (spin, sleep) time."""
    import specfault as sf
    from specfault.runtime import Op, Store, Work
    from specfault.sim.engine import Engine

    class Gate(Op):
        __slots__ = ("obj",)
        kind = "gate"
        blocking = True

        def __init__(self, obj: object) -> None:
            self.obj = obj

        def enabled(self) -> bool:
            return bool(self.obj.open)   # type: ignore[attr-defined]

        def perform(self) -> None:
            return None

        def footprint(self) -> tuple[tuple[object, str, str], ...]:
            return ((self.obj, "open", "r"),)

    Gate.spins = spins

    class Door:
        open = False

    door = Door()
    eng = Engine(sf.Machine(nr_cpus=2), CostProfile(work_ns={"open": 10_000.0}))

    async def waiter() -> None:
        await Gate(door)

    async def opener() -> None:
        await Work("open")
        await Store(door, "open", True)

    a = eng.spawn("A", None, waiter())
    eng.spawn("B", None, opener())
    eng.run()
    return a.spin, a.sleep


def test_engine_spins_or_sleeps_as_the_op_class_says() -> None:
    """A blocking op spins (keeps its CPU) when its class says ``spins``,
    else sleeps — whatever its kind string."""
    spin, sleep = _gate_run(spins=True)
    assert spin >= 10_000.0 and sleep == 0.0
    spin, sleep = _gate_run(spins=False)
    assert spin == 0.0 and sleep >= 10_000.0


def test_op_classes_flag_how_they_wait() -> None:
    from specfault.sync.cpu import WaitIpis
    from specfault.sync.rcu import _WaitGp
    from specfault.sync.rwsem import _DownRead, _DownWrite, _Trylock, _Up, _WaitGranted
    from specfault.sync.seqcount import SeqBegin
    from specfault.sync.spinlock import SpinAcquire, SpinTrylock
    from specfault.sync.vma_lock import RefIncNotZeroLimited

    assert all(c.spins for c in (SpinAcquire, SeqBegin, WaitIpis))
    assert not any(c.spins for c in (SpinTrylock, _WaitGranted, _WaitGp))
    assert _WaitGp.waits_for_gp and not _WaitGranted.waits_for_gp
    assert all(c.lockstat for c in (_DownRead, _DownWrite, _Trylock, _WaitGranted, _Up))
    assert not RefIncNotZeroLimited.lockstat and not SpinAcquire.lockstat


@pytest.mark.parametrize("by_steps", [False, True])
def test_deadlock_is_reported_by_run_and_by_step(by_steps: bool) -> None:
    """A thread parked forever (its CPU given away) is a deadlock, whether
    the engine is driven by run() or by step() in a loop."""
    import specfault as sf
    from specfault.runtime import WaitUntil, Work
    from specfault.sim.engine import Engine, SimError

    class Flag:
        up = False

    flag = Flag()
    eng = Engine(sf.Machine(nr_cpus=2), CostProfile())

    async def waits() -> None:
        await Work("x")
        await WaitUntil(lambda: flag.up, "flag", (flag,))

    eng.spawn("W", None, waits())
    with pytest.raises(SimError, match="deadlock at .*W in wait flag"):
        if by_steps:
            while eng.step():
                pass
        else:
            eng.run()
    eng.close()
