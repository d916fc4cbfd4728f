"""Check-then-act: eight threads lazily create one shared instance.

Broken: ``if instance is None: instance = create()`` without a lock — two
threads both see None and both create it.  Correct: the check and the act
under one mutex.
"""

from specfault.check.api import Mutex, Shared, check, join, program, spawn

THREADS = 8



async def _run(locked: bool) -> int:
    instance = Shared("instance", None)
    created = Shared("created", 0)
    lock = Mutex("init_lock")

    async def get_instance() -> None:
        if locked:
            await lock.lock()
        if await instance.load() is None:
            n = await created.add_return(1)
            await instance.store(f"object#{n}")
        if locked:
            await lock.unlock()

    threads = [await spawn(get_instance) for _ in range(THREADS)]
    for t in threads:
        await join(t)
    check(created.value == 1, f"the instance was created {created.value} times, "
                              f"instance is {instance.value!r}")
    return created.value


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
