"""runtime/driver.py: what the direct driver, the explorer and the
simulator share — switching STATE, advancing / throwing into / closing a
task's coroutine, the preemptibility test."""

from __future__ import annotations

from typing import Any

from specfault.runtime import STATE, Task, Yield, direct
from specfault.runtime.driver import advance, close, enter, leave, preemptible, switch, throw
from specfault.sync import RwSemaphore, SpinLock


def test_enter_leave_nest_and_restore() -> None:
    a, b = Task(0, "A"), Task(1, "B")
    before = (STATE.inline, STATE.task)
    outer = enter(False, a)
    assert (STATE.inline, STATE.task) == (False, a)
    inner = enter(True, b)
    assert (STATE.inline, STATE.task) == (True, b) and inner == (False, a)
    leave(inner)
    assert (STATE.inline, STATE.task) == (False, a)
    leave(outer)
    assert (STATE.inline, STATE.task) == before
    with switch(False, b):
        assert (STATE.inline, STATE.task) == (False, b)
    assert (STATE.inline, STATE.task) == before


def test_direct_driver_restores_state_even_when_the_model_raises() -> None:
    before = (STATE.inline, STATE.task)
    t = Task(0, "T")

    async def boom() -> None:
        assert STATE.inline and STATE.task is t
        raise ValueError("model error")

    try:
        direct.run(boom(), t)
    except ValueError as exc:
        assert str(exc) == "model error"      # raised to the caller, not recorded
    else:
        raise AssertionError("direct.run swallowed the model's error")
    assert (STATE.inline, STATE.task) == before and not t.done


async def _two_ops(log: list[Any]) -> str:
    log.append(await Yield())
    log.append(await Yield())
    return "done"


def test_advance_runs_to_the_next_op_and_records_the_end() -> None:
    log: list[Any] = []
    t = Task(0, "T", _two_ops(log))
    saved = enter(False, t)
    try:
        op = advance(t)
        assert type(op) is Yield and t.pending is op and not t.done
        assert type(advance(t, 1)) is Yield and log == [1]
        assert advance(t, 2) is None
        assert t.done and t.result == "done" and t.error is None and t.pending is None
        assert log == [1, 2]
    finally:
        leave(saved)


def test_advance_and_throw_record_model_errors_instead_of_raising() -> None:
    async def fails() -> None:
        await Yield()
        raise KeyError("k")

    t = Task(0, "T", fails())
    saved = enter(False, t)
    try:
        advance(t)
        assert advance(t) is None and t.done and isinstance(t.error, KeyError)

        async def catches() -> str:
            try:
                await Yield()
            except RuntimeError as exc:
                await Yield()
                return f"caught {exc}"
            return "not thrown"

        u = Task(1, "U", catches())
        advance(u)
        assert type(throw(u, RuntimeError("x"))) is Yield and not u.done
        assert advance(u) is None and u.result == "caught x"
        v = Task(2, "V", _two_ops([]))
        advance(v)
        assert throw(v, RuntimeError("y")) is None and v.done and isinstance(v.error, RuntimeError)
    finally:
        leave(saved)


def test_close_runs_finally_clauses_as_their_task() -> None:
    seen: list[Any] = []

    async def body(name: str, awaits_in_finally: bool) -> None:
        try:
            await Yield()
        finally:
            seen.append((name, STATE.task.name if STATE.task else None))
            if awaits_in_finally:
                await Yield()       # RuntimeError on close: dropped

    a = Task(0, "A", body("a", False))
    b = Task(1, "B", body("b", True))
    c = Task(2, "C", _two_ops([]))
    outer = Task(9, "outer")
    saved = enter(False, outer)
    try:
        for t in (a, b, c):
            advance(t)
        advance(c)
        advance(c)
        assert c.done
        close([a, b, c])
        assert seen == [("a", "A"), ("b", "B")]
        assert STATE.task is outer
        assert a.coro is not None and a.coro.cr_frame is None    # closed
    finally:
        leave(saved)


def test_preemptible() -> None:
    t = Task(0, "T")
    assert preemptible(t)
    t.irq_disabled = 1
    assert not preemptible(t) and not preemptible(t, preempt_rcu=True)
    t.irq_disabled = 0
    t.held.append(SpinLock("ptl"))
    assert not preemptible(t) and not preemptible(t, preempt_rcu=True)
    t.held[0] = RwSemaphore("mmap_lock")    # a sleeping lock: preemptible
    assert preemptible(t)
    t.rcu_nesting = 1
    assert not preemptible(t)                       # !PREEMPT_RCU (the simulator)
    assert preemptible(t, preempt_rcu=True)         # PREEMPT_RCU (the explorer)
