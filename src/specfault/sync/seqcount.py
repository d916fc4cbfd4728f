"""seqcount_t, as generic functions on any object with a sequence field.

The writer makes the count odd (``write_seqcount_begin``) before changing
what it protects and even again after (``write_seqcount_end``); a reader
samples it before and re-checks after.  ``mm->mm_lock_seq`` is one:
``mmap_write_lock()`` bumps it to odd, ``mmap_write_unlock()`` to even, and
lockless readers (speculative faults, uprobes) use
``mmap_lock_speculate_try_begin()`` / ``mmap_lock_speculate_retry()``.

Width
-----
The count wraps at ``2**bits``.  ``bits`` is taken from the argument, else
from the object's ``<field>_bits`` attribute (``mm.mm_lock_seq_bits``), else
64.  A narrow count lets a reader preempted across ``2**(bits-1)`` write
cycles see the same even value again — the ABA that made ``mm_lock_seq``
64-bit; the wraparound mutant sets ``mm_lock_seq_bits`` small.

Every access is one op (the explorer may interleave between any two);
nothing here spins except :func:`read_seqcount_begin`, which is a blocking
op enabled when the count is even.
"""

from __future__ import annotations

from typing import Any

from specfault.runtime import KObject, Load, ModelBug, Op, UseAfterFree


def _load(obj: Any, field: str) -> Any:
    """``Load(obj, field).perform()`` without making the op."""
    if isinstance(obj, KObject) and obj.freed_at is not None:
        raise UseAfterFree(obj, obj.freed_at, f"load {field}")
    return getattr(obj, field)


def _bits(obj: Any, field: str, bits: int | None) -> int:
    if bits is not None:
        return bits
    return int(getattr(obj, field + "_bits", 64))


class SeqWrite(Op):
    """do_raw_write_seqcount_begin/end: ``obj.field += 1`` (mod 2**bits)."""

    __slots__ = ("obj", "field", "begin", "bits")
    kind = "seq_write"

    def __init__(self, obj: Any, field: str, begin: bool, bits: int | None = None) -> None:
        self.obj = obj
        self.field = field
        self.begin = begin
        self.bits = bits

    def perform(self) -> int:
        obj, field = self.obj, self.field
        if isinstance(obj, KObject) and obj.freed_at is not None:
            raise UseAfterFree(obj, obj.freed_at, f"write_seqcount {field}")
        seq = getattr(obj, field)
        if (seq & 1) != (0 if self.begin else 1):
            which = "begin" if self.begin else "end"
            raise ModelBug(f"write_seqcount_{which}({field}): count {seq} has the wrong parity")
        seq = (seq + 1) & ((1 << _bits(obj, field, self.bits)) - 1)
        setattr(obj, field, seq)
        return seq

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.obj, self.field, "w"),)

    def describe(self) -> str:
        return f"write_seqcount_{'begin' if self.begin else 'end'} {self.field}"


class SeqBegin(Op):
    """read_seqcount_begin: wait for an even count and return it."""

    __slots__ = ("obj", "field")
    kind = "seq_begin"
    blocking = True
    spins = True

    def __init__(self, obj: Any, field: str) -> None:
        self.obj = obj
        self.field = field

    def enabled(self) -> bool:
        return not getattr(self.obj, self.field) & 1

    def perform(self) -> int:
        return int(_load(self.obj, self.field))

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.obj, self.field, "r"),)

    def describe(self) -> str:
        return f"read_seqcount_begin {self.field}"


class SeqRetry(Op):
    """read_seqcount_retry: has the count moved since ``seq``?"""

    __slots__ = ("obj", "field", "seq")
    kind = "seq_retry"

    def __init__(self, obj: Any, field: str, seq: int) -> None:
        self.obj = obj
        self.field = field
        self.seq = seq

    def perform(self) -> bool:
        return bool(_load(self.obj, self.field) != self.seq)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return ((self.obj, self.field, "r"),)

    def describe(self) -> str:
        return f"read_seqcount_retry {self.field}"


def raw_read_seqcount(obj: Any, field: str = "mm_lock_seq") -> Load:
    """``await raw_read_seqcount(obj)``: the count as is, odd or even."""
    return Load(obj, field)


def read_seqcount_begin(obj: Any, field: str = "mm_lock_seq") -> SeqBegin:
    """``seq = await read_seqcount_begin(obj)``: waits while odd."""
    return SeqBegin(obj, field)


async def raw_seqcount_try_begin(obj: Any, field: str = "mm_lock_seq") -> tuple[bool, int]:
    """``ok, seq = await raw_seqcount_try_begin(obj)``: never waits; ``ok``
    is False when a writer is inside (odd count)."""
    seq: int = await Load(obj, field)
    return (not seq & 1, seq)


def read_seqcount_retry(obj: Any, seq: int, field: str = "mm_lock_seq") -> SeqRetry:
    """``if await read_seqcount_retry(obj, seq): ...retry``."""
    return SeqRetry(obj, field, seq)


def write_seqcount_begin(obj: Any, field: str = "mm_lock_seq", bits: int | None = None) -> SeqWrite:
    """``await write_seqcount_begin(obj)``: even -> odd.  Caller holds the
    writers' lock."""
    return SeqWrite(obj, field, True, bits)


def write_seqcount_end(obj: Any, field: str = "mm_lock_seq", bits: int | None = None) -> SeqWrite:
    """``await write_seqcount_end(obj)``: odd -> even."""
    return SeqWrite(obj, field, False, bits)


async def mmap_lock_speculate_try_begin(mm: Any) -> tuple[bool, int]:
    """include/linux/mmap_lock.h: ``ok, seq = await ...(mm)``; False while
    mmap_lock is write-locked (odd ``mm_lock_seq``)."""
    return await raw_seqcount_try_begin(mm, "mm_lock_seq")


def mmap_lock_speculate_retry(mm: Any, seq: int) -> SeqRetry:
    """``if await mmap_lock_speculate_retry(mm, seq): abort`` — True when a
    writer took mmap_lock since ``seq`` was sampled."""
    return SeqRetry(mm, "mm_lock_seq", seq)
