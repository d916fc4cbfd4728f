"""A ticket spinlock, and a broken one whose ticket take is not atomic.

A ticket lock hands out tickets from ``next`` and serves them in order:
``owner`` is the ticket being served.  ``lock`` takes a ticket (one atomic
``fetch_add``) and waits for its turn; ``unlock`` serves the next ticket.
Broken: the ticket is taken with a load and a store, so two threads can
draw the same ticket and hold the lock together.  Each thread checks, in
its critical section, that it is alone there.
"""

from specfault.check.api import Shared, check, join, program, spawn


class TicketLock:
    def __init__(self, name: str) -> None:
        self.next = Shared(f"{name}.next", 0)     # the next ticket to hand out
        self.owner = Shared(f"{name}.owner", 0)   # the ticket being served

    async def lock(self) -> None:
        me = await self.next.fetch_add(1)         # take a ticket
        await self.owner.wait_until(lambda v: v == me, f"owner == {me}")

    async def unlock(self) -> None:
        served = await self.owner.load()          # only the holder writes owner
        await self.owner.store(served + 1)


class BrokenTicketLock(TicketLock):
    async def lock(self) -> None:
        me = await self.next.load()               # BUG: two steps, not one atomic
        await self.next.store(me + 1)
        await self.owner.wait_until(lambda v: v == me, f"owner == {me}")


def contend(lock_class: type[TicketLock], threads: int):  # noqa: ANN201
    """A program: ``threads`` threads take the lock once each."""
    async def main() -> None:
        lock = lock_class("tl")
        inside = Shared("inside", 0)

        async def worker() -> None:
            await lock.lock()
            n = await inside.add_return(1)        # the critical section
            check(n == 1, f"{n} threads hold the ticket lock")
            await inside.fetch_sub(1)
            await lock.unlock()

        handles = [await spawn(worker) for _ in range(threads)]
        for h in handles:
            await join(h)
    return main


correct = program(contend(TicketLock, 3), name=f"{__name__}:correct")
broken = program(contend(BrokenTicketLock, 3), name=f"{__name__}:broken")
correct8 = program(contend(TicketLock, 8), name=f"{__name__}:correct8")
broken8 = program(contend(BrokenTicketLock, 8), name=f"{__name__}:broken8")
