"""The explorer restores a snapshot of each mm scenario's world instead of
building it for every execution (``runtime/fast.py``: :class:`Snapshot`,
:class:`WorldPool`; ``Scenario.snapshot``).  These tests pin that it is
invisible:

* on every registered mm scenario under every protocol, executions on a
  restored world are the same as on a world built from scratch for the
  same schedules: choices, trace, failure, the history the threads
  observed, the final maps and memory, the kernel's event counters;
* a restored world is, object for object, the world as it was built
  (:func:`_dump`: every field of every object reachable from it);
* a world is never restored under an execution someone still holds;
* an object the snapshot cannot restore fails loudly, naming where it is.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from typing import Any

import pytest

from specfault.check.engine import Execution
from specfault.check.explore import explore
from specfault.check.scenario import Scenario, Thread
from specfault.check.scenarios import SPECS, build
from specfault.check.scenarios.base import final_observation
from specfault.runtime.fast import Snapshot, SnapshotError, WorldPool, reachable

PAIRS = [(s.name, p) for s in SPECS for p in s.protocols]
SEEDS = 4


def _random_chooser(seed: int) -> Any:
    rnd = random.Random(seed).random
    return lambda ex, enabled: enabled[int(rnd() * len(enabled))]


def _labels(text: str) -> str:
    """mm#N, mmap_lock#N: the mm's number comes from a global counter, so
    it differs between builds (and in main between every execution)."""
    return re.sub(r"#\d+", "#N", text)


def _summary(ex: Execution) -> tuple[Any, ...]:
    world = ex.state
    failure = None if ex.failure is None else (ex.failure.kind, _labels(ex.failure.message),
                                               ex.failure.step, ex.failure.site)
    return (tuple(ex.choices), _labels("\n".join(ex.trace_lines())), failure,
            ex.scenario.observe(world) if ex.scenario.observe else None,
            sorted(world.machine.kernel.vmstat.items()), final_observation(world))


@pytest.mark.parametrize(("spec", "protocol"), PAIRS, ids=[f"{s}@{p}" for s, p in PAIRS])
def test_restored_world_runs_like_a_fresh_one(spec: str, protocol: str) -> None:
    pooled = build(spec, protocol)
    assert pooled.snapshot
    fresh = dataclasses.replace(pooled, snapshot=False)
    for seed in range(SEEDS):
        want = _summary(Execution(fresh).run(_random_chooser(seed)))
        got = _summary(Execution(pooled).run(_random_chooser(seed)))
        assert got == want, f"seed {seed}"
    # the pool built its two worlds and restored them from then on
    assert pooled._pool is not None and pooled._pool.builds == 2


@pytest.mark.parametrize("mutant", ["no_seq2_check", "vma_free_immediate", "no_seq_bump_on_write_lock"])
def test_mutant_hunts_find_the_same(mutant: str) -> None:
    """A failing exploration (its schedule, minimised) is the same with
    and without snapshots."""
    for spec in ("fault-vs-munmap", "fault-vs-mprotect"):
        pooled = build(spec, "speculative", mutant)
        fresh = dataclasses.replace(pooled, snapshot=False)
        a = explore(fresh, strategy="random", max_schedules=150, budget_seconds=None)
        b = explore(pooled, strategy="random", max_schedules=150, budget_seconds=None)
        ja, jb = a.to_json(), b.to_json()
        ja.pop("elapsed"), jb.pop("elapsed")
        assert _labels(repr(jb)) == _labels(repr(ja))


def _dump(root: Any) -> list[Any]:
    """Every object reachable from ``root`` in a fixed order: its type and
    its fields, with references to other objects as their number in the
    walk (so two dumps are equal when the graphs are the same)."""
    order: dict[int, int] = {}
    out: list[Any] = []
    todo = [root]

    def ref(v: Any) -> Any:
        if isinstance(v, (int, float, str, bytes, bool, type(None))):
            return v
        if id(v) not in order:
            order[id(v)] = len(order)
            todo.append(v)
        return ("@", order[id(v)])

    order[id(root)] = 0
    objs = reachable(root, strict=False)
    while todo:
        obj = todo.pop(0)
        if id(obj) not in objs and obj is not root:
            out.append(("shared/leaf", type(obj).__name__, repr(obj)[:60]))
            continue
        t = type(obj)
        if isinstance(obj, dict):
            out.append((t.__name__, [(ref(k), ref(v)) for k, v in obj.items()]))
        elif isinstance(obj, (list, tuple)):
            out.append((t.__name__, [ref(v) for v in obj]))
        elif isinstance(obj, (set, frozenset)):
            out.append((t.__name__, sorted(repr(ref(v)) for v in obj)))
        elif isinstance(obj, bytearray):
            out.append(("bytearray", bytes(obj)))
        elif isinstance(obj, itertools.count):
            out.append(("count", repr(obj)))
        else:
            fields = dict(getattr(obj, "__dict__", {}))
            for klass in t.__mro__:
                for name in getattr(klass, "__slots__", ()):
                    if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                        fields[name] = getattr(obj, name)
            out.append((t.__name__, [(k, ref(v)) for k, v in fields.items()]))
    return out


class _Owner:
    """Something to lend a world to."""


def _lent_snapshot(pool: WorldPool, world: Any) -> Snapshot:
    return next(snap for _, w, snap in pool.lent if w is world)


@pytest.mark.parametrize("spec", ["fault-vs-munmap", "cow-vs-fork", "fork-vs-fault-and-tlb",
                                  "fault-vs-remap-elsewhere", "cow-vs-unmap-everywhere"])
def test_restore_gives_back_the_world_as_built(spec: str) -> None:
    scen = build(spec, "dufour")
    pool = WorldPool(scen.build_world)
    owner = _Owner()
    world = pool.acquire(owner)
    env, state = world
    snap = _lent_snapshot(pool, world)
    before = _dump(world)

    def same_world(new_env: Any) -> Any:        # run the scenario's threads on this world
        new_env.cpus = env.cpus
        new_env.use_rcu(env.rcu)
        return state

    on_it = dataclasses.replace(scen, setup=same_world, snapshot=False)
    changed = 0
    for seed in range(4):
        Execution(on_it).run(_random_chooser(seed))
        changed += _dump(world) != before
        snap.restore()
        assert _dump(world) == before, f"seed {seed}"
    assert changed == 4


def test_a_held_execution_keeps_its_world() -> None:
    scen = build("fault-vs-munmap", "speculative")
    kept = Execution(scen).run(_random_chooser(0))
    seen = _dump(kept.state)
    for seed in range(1, 6):
        Execution(scen).run(_random_chooser(seed))
    assert _dump(kept.state) == seen
    pool = scen._pool
    assert pool is not None and pool.builds == 2      # `kept` has one, the others took turns on the other
    also = Execution(scen).run(_random_chooser(6))
    Execution(scen).run(_random_chooser(7))
    assert pool.builds == 3                          # both held: a third world
    assert _dump(kept.state) == seen
    del kept, also
    for seed in range(8, 12):
        Execution(scen).run(_random_chooser(seed))
    assert pool.builds == 3


def test_lent_worlds_are_bounded() -> None:
    """A caller that keeps every execution does not make the pool keep
    more than ``lend`` worlds (beyond that they belong to their owners)."""
    built = itertools.count()
    pool = WorldPool(lambda: {"n": next(built)}, keep=2, lend=3)
    owners = [_Owner() for _ in range(10)]
    for o in owners:
        pool.acquire(o)
    assert len(pool.lent) == 3 and pool.builds == 10       # the first call builds two, the second takes one
    del owners
    pool.acquire(_Owner())
    assert len(pool.free) <= 2 and pool.builds == 10


# ------------------------------------------------------------ what is covered
class _Plain:
    def __init__(self) -> None:
        self.items: list[int] = [1, 2]
        self.table = {"a": [3]}
        self.ids = itertools.count(7)


class _Slotted:
    __slots__ = ("x", "y", "__private")

    def __init__(self) -> None:
        self.x = 1
        self.__private = [0]


def test_snapshot_restores_fields_containers_slots_cells_and_counters() -> None:
    box = [10]

    def closure() -> int:
        return box[0]

    plain, slotted = _Plain(), _Slotted()
    root = {"plain": plain, "slotted": slotted, "fn": closure, "s": {1, 2}, "ba": bytearray(b"ab")}
    snap = Snapshot(root)
    plain.items.append(9)
    plain.table["b"] = []
    plain.table["a"].clear()
    plain.extra = 5                      # type: ignore[attr-defined]
    assert next(plain.ids) == 7 and next(plain.ids) == 8
    slotted.x, slotted.y = 2, 3
    slotted._Slotted__private.append(1)  # type: ignore[attr-defined]
    box[0] = 11
    root["s"].add(3)                     # type: ignore[attr-defined]
    root["ba"][0] = 0                    # type: ignore[index]
    root["new"] = 1
    snap.restore()
    assert plain.items == [1, 2] and plain.table == {"a": [3]} and not hasattr(plain, "extra")
    assert next(plain.ids) == 7          # a new counter, where the recorded one stood
    assert slotted.x == 1 and not hasattr(slotted, "y") and slotted._Slotted__private == [0]  # type: ignore[attr-defined]
    assert closure() == 10 and root["s"] == {1, 2} and root["ba"] == b"ab" and "new" not in root


@pytest.mark.parametrize(("bad", "what"), [
    (random.Random(1), "Random"),
    ((x for x in ()), "generator"),
    (iter([1]), "list_iterator"),
    ((itertools.count(),), "count"),
])
def test_uncovered_objects_fail_loudly(bad: Any, what: str) -> None:
    plain = _Plain()
    plain.table["deep"] = [bad]                      # type: ignore[list-item]
    with pytest.raises(SnapshotError, match=what) as err:
        Snapshot({"world": plain})
    if what != "count":
        assert "root['world'].table['deep'][0]" in str(err.value)


def test_pool_refuses_a_world_it_cannot_restore() -> None:
    """A scenario whose world holds something uncovered fails at once,
    naming it — it never silently keeps state between executions."""
    def setup(env: Any) -> Any:
        return {"rng": random.Random(0), "n": 0}

    async def body(st: Any) -> None:
        st["n"] = 1

    scen = Scenario("uncovered", setup, [Thread("T0", body)], rcu=False, snapshot=True)
    with pytest.raises(SnapshotError, match="Random"):
        Execution(scen)
