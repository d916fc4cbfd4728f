"""Lost wakeup: the waiter tests the condition without the mutex.

Broken: the waiter reads ``ready`` unlocked, finds it false, then takes
the mutex and waits — if the signaller sets ``ready`` and signals in
between, nobody is waiting yet, the signal is lost and the waiter sleeps
forever (a deadlock: the report says who waits on what).  Correct: test
the condition under the mutex, in a loop, as ``wait_event`` does.
"""

from specfault.check.api import CondVar, Mutex, Shared, join, program, spawn


async def _run(locked_test: bool) -> None:
    ready = Shared("ready", False)
    m = Mutex("m")
    cv = CondVar("cv")

    async def waiter() -> None:
        if locked_test:
            async with m:
                while not await ready.load():
                    await cv.wait(m)
        else:
            if not await ready.load():          # unlocked test ...
                async with m:
                    await cv.wait(m)            # ... then sleep: the signal may be gone

    async def waker() -> None:
        async with m:
            await ready.store(True)
            await cv.signal()

    t1 = await spawn(waiter, name="waiter")
    t2 = await spawn(waker, name="waker")
    await join(t1)
    await join(t2)


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
