"""A seqlock, and a reader that does not retry.

Writers serialise on a spinlock and make the sequence count odd while they
update the data (here a pair that must stay equal).  A reader waits for an
even count, reads, and retries if the count moved meanwhile
(``read_seqcount_retry``).  Broken: the reader skips the retry, and may
return a pair torn by a writer that ran in between.
"""

from specfault.check.api import Shared, SpinLock, check, join, program, spawn


class SeqLock:
    def __init__(self, name: str) -> None:
        self.seq = Shared(f"{name}.seq", 0)
        self.lock = SpinLock(f"{name}.lock")      # writers exclude each other

    async def write_begin(self) -> None:
        await self.lock.lock()
        await self.seq.add_return(1)              # odd: a write is in progress

    async def write_end(self) -> None:
        await self.seq.add_return(1)              # even again
        await self.lock.unlock()

    async def read_begin(self) -> int:
        return await self.seq.wait_until(lambda s: s % 2 == 0, "seq even")

    async def read_retry(self, start: int) -> bool:
        return await self.seq.load() != start


def pair_program(retry: bool, writers: int = 1, readers: int = 1):  # noqa: ANN201
    """A program: ``writers`` writers and ``readers`` readers."""
    async def main() -> None:
        sl = SeqLock("sl")
        x, y = Shared("x", 0), Shared("y", 0)

        async def writer(v: int) -> None:
            await sl.write_begin()
            await x.store(v)
            await y.store(v)
            await sl.write_end()

        async def reader() -> None:
            while True:
                start = await sl.read_begin()
                a = await x.load()
                b = await y.load()
                if not retry or not await sl.read_retry(start):
                    break
            check(a == b, f"torn read: x = {a}, y = {b}")

        handles = [await spawn(writer, v, name=f"W{v}") for v in range(1, writers + 1)]
        handles += [await spawn(reader, name=f"R{i}") for i in range(1, readers + 1)]
        for h in handles:
            await join(h)
    return main


correct = program(pair_program(retry=True), name=f"{__name__}:correct")
broken = program(pair_program(retry=False), name=f"{__name__}:broken")
correct4 = program(pair_program(retry=True, writers=2, readers=2), name=f"{__name__}:correct4")
broken4 = program(pair_program(retry=False, writers=2, readers=2), name=f"{__name__}:broken4")
