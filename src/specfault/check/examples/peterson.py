"""Peterson's mutual exclusion for two threads, with its two writes swapped.

Correct: ``flag[i] = true; turn = j; wait while flag[j] and turn == j``.
Under sequential consistency (the model's memory) that is mutual
exclusion.  Broken: ``turn = j`` before ``flag[i] = true`` — a thread can
give the turn away, the other take it back and enter, and the first then
raise its flag and enter too, seeing ``turn`` on its side.  (Real CPUs
also need a full barrier between the flag store and the loads; the model
is sequentially consistent, so it shows this bug, not that one.)
"""

from specfault.check.api import Shared, check, cpu_relax, join, program, spawn


async def _run(flag_first: bool) -> None:
    flag = [Shared("flag[0]", False), Shared("flag[1]", False)]
    turn = Shared("turn", 0)
    inside = Shared("inside", 0)

    async def thread(i: int) -> None:
        j = 1 - i
        if flag_first:
            await flag[i].store(True)
            await turn.store(j)
        else:
            await turn.store(j)
            await flag[i].store(True)
        while await flag[j].load() and await turn.load() == j:
            await cpu_relax()
        n = await inside.add_return(1)                # the critical section
        check(n == 1, f"{n} threads inside the critical section")
        await inside.fetch_sub(1)
        await flag[i].store(False)

    t0 = await spawn(thread, 0, name="T0")
    t1 = await spawn(thread, 1, name="T1")
    await join(t0)
    await join(t1)


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
