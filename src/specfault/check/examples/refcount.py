"""A reference count dropped to zero under a reader's feet (use after free).

An object is reachable from ``slot`` and holds one reference for it.
Readers look it up and take a reference; a remover unpublishes it and
drops the slot's reference; whoever drops the last one frees it.  Broken:
the lookup reads ``slot`` and takes its reference without the lock the
remover holds — the remover can clear the slot, drop the count to zero and
free the object in between, and the reader's ``fetch_add`` touches freed
memory (kref_get after the final kref_put) — or takes a reference from
zero, and the object is freed twice (``DoubleFree``).  Correct: lookup-and-get and
unpublish under one mutex, so a reference is never taken from zero.
"""

from specfault.check.api import Mutex, Shared, check, join, program, spawn


class Obj:
    name = "obj"

    def __init__(self) -> None:
        self.refcount = Shared("obj.refcount", 1)     # the slot's reference
        self.data = Shared("obj.data", 42)


async def put(obj: Obj) -> None:
    if await obj.refcount.fetch_sub(1) == 1:          # the last reference: free
        await obj.data.free()
        await obj.refcount.free()


async def _run(locked: bool) -> None:
    slot = Shared("slot", Obj())
    lock = Mutex("lookup_lock")

    async def reader() -> None:
        if locked:
            await lock.lock()
        obj = await slot.load()
        if obj is not None:
            await obj.refcount.fetch_add(1)
        if locked:
            await lock.unlock()
        if obj is not None:
            v = await obj.data.load()
            check(v == 42, f"read {v} from the object")
            await put(obj)

    async def remover() -> None:
        if locked:
            await lock.lock()
        obj = await slot.xchg(None)
        if locked:
            await lock.unlock()
        await put(obj)

    threads = [await spawn(reader, name="R1"), await spawn(reader, name="R2"),
               await spawn(remover, name="remover")]
    for t in threads:
        await join(t)


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
