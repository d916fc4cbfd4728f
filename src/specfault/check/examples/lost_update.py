"""Lost update: eight threads increment a counter with a load and a store.

Broken: ``v = load; store v + 1`` — two threads that load the same value
write the same result, and one increment is lost.  Correct: one atomic
``fetch_add``.
"""

from specfault.check.api import Shared, check, join, program, spawn

THREADS = 8



async def _run(atomic: bool) -> int:
    counter = Shared("counter", 0)

    async def worker() -> None:
        if atomic:
            await counter.fetch_add(1)
        else:
            v = await counter.load()
            await counter.store(v + 1)

    threads = [await spawn(worker) for _ in range(THREADS)]
    for t in threads:
        await join(t)
    check(counter.value == THREADS, f"lost update: counter is {counter.value}, expected {THREADS}")
    return counter.value


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
