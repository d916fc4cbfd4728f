"""Ctrl-C in the middle of a simulation is the user's, not a model error:
the engine lets KeyboardInterrupt (and SystemExit) through instead of
wrapping them in a SimError, and leaves the driver state as it found it."""

from __future__ import annotations

import pytest

import specfault as sf
from specfault.runtime import STATE, Work
from specfault.sim.engine import Engine, SimError


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_the_engine_lets_ctrl_c_through(exc: type[BaseException]) -> None:
    m = sf.Machine(nr_frames=1024)
    mm = m.spawn().mm
    eng = Engine(m)

    async def busy() -> None:
        while True:
            await Work("user_ns", 100)

    async def interrupted() -> None:
        await Work("user_ns", 1000)
        raise exc

    eng.spawn("busy", mm, busy())
    eng.spawn("ctrl-c", mm, interrupted())
    saved = (STATE.inline, STATE.task)
    with pytest.raises(exc):
        eng.run()
    eng.close()
    assert (STATE.inline, STATE.task) == saved


def test_a_model_error_is_still_a_sim_error() -> None:
    m = sf.Machine(nr_frames=1024)
    eng = Engine(m)

    async def broken() -> None:
        await Work("user_ns", 10)
        raise RuntimeError("model bug")

    eng.spawn("broken", m.spawn().mm, broken())
    with pytest.raises(SimError, match="model bug"):
        eng.run()
    eng.close()
