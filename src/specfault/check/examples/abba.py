"""Deadlock by lock-order inversion (ABBA).

Broken: one thread takes A then B, the other B then A.  Lockdep reports
the inversion as soon as both orders have been seen — even in a schedule
that happens not to deadlock (``LockOrderViolation``); with lockdep off
(``broken_no_lockdep``) the explorer finds the schedule that deadlocks.
Correct: both take A before B.
"""

from specfault.check.api import Checks, Mutex, Shared, join, program, spawn


async def _run(inverted: bool) -> int:
    a, b = Mutex("A"), Mutex("B")
    balance = Shared("balance", 0)

    async def transfer(first: Mutex, second: Mutex) -> None:
        async with first:
            async with second:
                await balance.add_return(1)

    t1 = await spawn(transfer, a, b)
    t2 = await spawn(transfer, *((b, a) if inverted else (a, b)))
    await join(t1)
    await join(t2)
    return balance.value


correct = program(_run, name=f"{__name__}:correct", args=(False,))
broken = program(_run, name=f"{__name__}:broken", args=(True,))
broken_no_lockdep = program(_run, name=f"{__name__}:broken_no_lockdep", args=(True,),
                            checks=Checks(lockdep=False))
