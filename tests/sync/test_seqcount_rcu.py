"""seqcount (mm_lock_seq) and RCU grace periods."""

from __future__ import annotations

import pytest

from specfault.check import Scenario, Thread, explore, lookup
from specfault.runtime import Deadlock, KObject, Load, ModelBug, Task, UseAfterFree, direct
from specfault.sync import Rcu, RwSemaphore
from specfault.sync.cpu import Cpu, local_irq_disable, local_irq_enable
from specfault.sync.lockdep import SleepInAtomic
from specfault.sync.mmap_lock import mmap_write_lock, mmap_write_unlock
from specfault.sync.seqcount import (
    mmap_lock_speculate_retry,
    mmap_lock_speculate_try_begin,
    read_seqcount_begin,
    write_seqcount_begin,
    write_seqcount_end,
)


class Mm:
    def __init__(self, bits: int = 64) -> None:
        self.mm_lock_seq = 0
        self.mm_lock_seq_bits = bits
        self.mmap_lock = RwSemaphore("mmap_lock")


def test_mmap_write_lock_makes_seq_odd_and_speculation_fails() -> None:
    mm = Mm()
    t = Task(0, "T")

    async def body() -> tuple[bool, bool, bool, int]:
        ok0, seq0 = await mmap_lock_speculate_try_begin(mm)
        await mmap_write_lock(mm)
        ok1, _ = await mmap_lock_speculate_try_begin(mm)
        await mmap_write_unlock(mm)
        moved = await mmap_lock_speculate_retry(mm, seq0)
        return ok0, ok1, moved, mm.mm_lock_seq

    assert direct.run(body(), t) == (True, False, True, 2)
    assert not mm.mmap_lock.is_locked()


def test_write_seqcount_parity_is_checked() -> None:
    mm = Mm()
    with pytest.raises(ModelBug, match="wrong parity"):
        direct.run(_aw(write_seqcount_end(mm)), Task(0, "T"))


def test_read_seqcount_begin_waits_while_odd() -> None:
    mm = Mm()
    mm.mm_lock_seq = 3
    with pytest.raises(Deadlock):
        direct.run(_aw(read_seqcount_begin(mm)), Task(0, "T"))


def test_narrow_seqcount_wraps_to_the_same_value() -> None:
    """The ABA of bug 4: 2**(bits-1) write cycles bring an even count back."""
    mm = Mm(bits=3)
    t = Task(0, "T")

    async def body() -> bool:
        ok, seq = await mmap_lock_speculate_try_begin(mm)
        assert ok
        for _ in range(4):        # 2**(3-1) writer cycles
            await write_seqcount_begin(mm)
            await write_seqcount_end(mm)
        return bool(await mmap_lock_speculate_retry(mm, seq))

    assert direct.run(body(), t) is False          # the reader cannot tell
    mm64 = Mm()
    mm64.mm_lock_seq_bits = 64
    assert mm.mm_lock_seq == 0


async def _aw(op: object) -> object:
    return await op  # type: ignore[misc]


@pytest.mark.parametrize("name,expect_ok", [("litmus.seqcount", True), ("litmus.seqcount-broken", False)])
def test_seqcount_litmus(name: str, expect_ok: bool) -> None:
    res = explore(lookup(name), max_preemptions=None)
    assert res.ok is expect_ok, res.report
    assert res.exhausted or not expect_ok
    if not expect_ok:
        assert "torn read" in res.failure.message  # type: ignore[union-attr]


# -- RCU ---------------------------------------------------------------------

class Obj(KObject):
    __slots__ = ("v",)

    def __init__(self) -> None:
        super().__init__()
        self.v = 1


def test_grace_period_waits_for_preexisting_readers_only() -> None:
    rcu = Rcu()
    reader, late, updater = Task(0, "reader"), Task(1, "late"), Task(2, "updater")
    obj = Obj()
    direct.run(_aw(rcu.read_lock()), reader)
    direct.run(_aw(rcu.kfree_rcu(obj, "obj")), updater)
    direct.run(_aw(rcu.read_lock()), late)            # started after: does not count
    assert rcu.process() == 0 and obj.freed_at is None
    direct.run(_aw(rcu.read_unlock()), reader)
    assert rcu.process() == 1
    assert obj.freed_at is not None and "obj retired by updater" in obj.freed_at
    with pytest.raises(UseAfterFree, match="freed by obj retired by updater"):
        direct.run(_aw(Load(obj, "v")), late)


def test_nested_read_sections_end_at_the_outermost_unlock() -> None:
    rcu = Rcu()
    r, u = Task(0, "r"), Task(1, "u")
    fired: list[str] = []
    direct.run(_aw(rcu.read_lock()), r)
    direct.run(_aw(rcu.read_lock()), r)
    direct.run(_aw(rcu.call_rcu(lambda: fired.append("cb"), "cb")), u)
    direct.run(_aw(rcu.read_unlock()), r)
    assert rcu.process() == 0
    direct.run(_aw(rcu.read_unlock()), r)
    assert rcu.process() == 1 and fired == ["cb"]


def test_irqs_off_is_a_reader_unless_configured_otherwise() -> None:
    for counts in (True, False):
        rcu = Rcu(irqs_off_is_reader=counts)
        cpu = Cpu(0, rcu)
        r, u = Task(0, "r", cpu=cpu), Task(1, "u", cpu=Cpu(1, rcu))
        direct.run(_aw(local_irq_disable()), r)
        direct.run(_aw(rcu.call_rcu(lambda: None, "cb")), u)
        assert rcu.ready() is (not counts)
        direct.run(_aw(local_irq_enable()), r)
        assert rcu.ready()


def test_synchronize_rcu_sleeps_so_not_from_a_reader() -> None:
    rcu = Rcu()
    t = Task(0, "T")

    async def body() -> None:
        await rcu.read_lock()
        await rcu.synchronize_rcu()

    with pytest.raises(SleepInAtomic, match="synchronize_rcu"):
        direct.run(body(), t)


def test_synchronize_rcu_waits_for_a_reader_under_the_explorer() -> None:
    def setup(env):  # type: ignore[no-untyped-def]
        return {"rcu": env.rcu, "log": []}

    async def reader(st: dict) -> None:
        await st["rcu"].read_lock()
        st["log"].append("read")
        await Load(st["rcu"], "gp_completed")
        st["log"].append("unlock")
        await st["rcu"].read_unlock()

    async def sync(st: dict) -> None:
        await st["rcu"].synchronize_rcu()
        st["log"].append("gp")

    def check(st: dict) -> str | None:
        log = st["log"]
        if "read" in log and log.index("read") < log.index("gp") and log.index("gp") < log.index("unlock"):
            return f"grace period ended inside a read-side section: {log}"
        return None

    sc = Scenario("sync-rcu", setup, [Thread("reader", reader), Thread("sync", sync)], check=check)
    res = explore(sc, max_preemptions=None)
    assert res.ok and res.exhausted and res.complete > 1, res.report


def test_sleep_in_rcu_litmus_is_reported() -> None:
    res = explore(lookup("litmus.sleep-in-rcu"))
    assert not res.ok and res.failure is not None and res.failure.kind == "SleepInAtomic"


@pytest.mark.parametrize("name,expect_ok", [("litmus.rcu", True), ("litmus.rcu-broken", False)])
def test_rcu_litmus(name: str, expect_ok: bool) -> None:
    res = explore(lookup(name), max_preemptions=2)
    assert res.ok is expect_ok, res.report
    if not expect_ok:
        f = res.failure
        assert f is not None and f.kind == "UseAfterFree"
        # names the object, the freeing site and the accessing site
        assert "of A" in f.message and "_rcu_updater" in f.message and "_rcu_reader" in f.message
