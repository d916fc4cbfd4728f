"""Double-checked locking: the fast path reads the published pointer
without the lock.

Correct: initialise the object, then publish the pointer (what
``smp_store_release`` orders; the model is sequentially consistent, so
program order is the order others see).  Broken: publish first, then
initialise — what a compiler or a weakly ordered CPU may do to the correct
code without the release, written out: a reader on the fast path finds the
pointer and reads a half-initialised object.
"""

from specfault.check.api import Mutex, Shared, check, join, program, spawn

THREADS = 4



async def _run(publish_last: bool) -> None:
    instance = Shared("instance", None)
    lock = Mutex("init_lock")

    async def get(i: int) -> None:
        obj = await instance.load()                 # fast path: no lock
        if obj is None:
            async with lock:
                obj = await instance.load()         # the second check
                if obj is None:
                    obj = Shared("obj.ready", 0)    # kzalloc
                    if publish_last:
                        await obj.store(42)
                        await instance.store(obj)
                    else:
                        await instance.store(obj)
                        await obj.store(42)
        v = await obj.load()
        check(v == 42, f"T{i} read obj.ready = {v}: the object was published before it "
                       f"was initialised")

    threads = [await spawn(get, i + 1) for i in range(THREADS)]
    for t in threads:
        await join(t)


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
