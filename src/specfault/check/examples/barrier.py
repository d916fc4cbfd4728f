"""A broken barrier with eight threads.

Each thread publishes its part, waits at the barrier, then reads its
neighbour's part, which must be there.  The barrier counts arrivals and
lets everyone through when the count reaches 8.  Broken: the arrival is
counted with a load and a store — two arrivals can count as one, the count
never reaches 8 and every thread waits forever (a deadlock).  Correct: an
atomic ``add_return``.
"""

from specfault.check.api import Shared, check, join, program, spawn

THREADS = 8



async def _run(atomic: bool) -> None:
    count = Shared("barrier.count", 0)
    parts = [Shared(f"part[{i}]", None) for i in range(THREADS)]

    async def barrier_wait() -> None:
        if atomic:
            await count.add_return(1)
        else:
            n = await count.load()
            await count.store(n + 1)
        await count.wait_until(lambda n: n == THREADS, f"barrier.count == {THREADS}")

    async def worker(i: int) -> None:
        await parts[i].store(i)
        await barrier_wait()
        j = (i + 1) % THREADS
        got = await parts[j].load()
        check(got == j, f"T{i + 1} passed the barrier before T{j + 1} arrived (part[{j}] is {got})")

    threads = [await spawn(worker, i) for i in range(THREADS)]
    for t in threads:
        await join(t)


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
