"""A single-producer single-consumer ring buffer with an off-by-one.

The producer may write slot ``head % SIZE`` while fewer than SIZE items
are unread (``head - tail < SIZE``); the consumer reads slot
``tail % SIZE`` while there is one (``head > tail``).  Broken: the
producer's test is ``head - tail <= SIZE`` — with the ring full it
overwrites the oldest unread item, and the consumer reads a value out of
order.
"""

from collections.abc import Callable

from specfault.check.api import Shared, check, join, program, spawn

SIZE = 2
ITEMS = 4


async def _run(strict: bool) -> None:
    head = Shared("head", 0)
    tail = Shared("tail", 0)
    buf = [Shared(f"buf[{i}]", None) for i in range(SIZE)]

    def has_room(h: int) -> Callable[[int], bool]:
        if strict:
            return lambda t: h - t < SIZE
        return lambda t: h - t <= SIZE

    def beyond(t: int) -> Callable[[int], bool]:
        return lambda h: h > t

    async def producer() -> None:
        for i in range(ITEMS):
            h = await head.load()
            await tail.wait_until(has_room(h), "room in the ring")
            await buf[h % SIZE].store(i)
            await head.store(h + 1)

    async def consumer() -> None:
        for i in range(ITEMS):
            t = await tail.load()
            await head.wait_until(beyond(t), "an item in the ring")
            v = await buf[t % SIZE].load()
            check(v == i, f"consumer read {v} from buf[{t % SIZE}], expected {i}: "
                          f"the producer overwrote an unread slot")
            await tail.store(t + 1)

    t1 = await spawn(producer, name="producer")
    t2 = await spawn(consumer, name="consumer")
    await join(t1)
    await join(t2)


correct = program(_run, name=f"{__name__}:correct", args=(True,))
broken = program(_run, name=f"{__name__}:broken", args=(False,))
