"""A missed condition: ``if`` instead of ``while`` around a condition wait.

Two consumers take items that one producer adds, one at a time, each
followed by a signal.  Broken: ``if empty: wait`` — a consumer woken by
the signal must take the mutex again, and the other consumer may take the
item first; the woken one then takes from an empty queue.  Correct:
``while empty: wait``.  (With ``Checks(spurious_wakeups=1)`` the broken
form also fails with a single consumer.)
"""

from specfault.check.api import CondVar, Mutex, Shared, check, join, program, spawn

ITEMS = 2


async def _run(loop: bool) -> None:
    items = Shared("items", 0)
    m = Mutex("queue_lock")
    nonempty = CondVar("nonempty")

    async def consumer() -> None:
        async with m:
            if loop:
                while await items.load() == 0:
                    await nonempty.wait(m)
            elif await items.load() == 0:
                await nonempty.wait(m)
            n = await items.load()
            check(n > 0, f"took an item from an empty queue (items = {n})")
            await items.store(n - 1)

    async def producer() -> None:
        for _ in range(ITEMS):
            async with m:
                await items.store(await items.load() + 1)
                await nonempty.signal()

    threads = [await spawn(consumer, name="C1"), await spawn(consumer, name="C2"),
               await spawn(producer, name="P")]
    for t in threads:
        await join(t)


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
