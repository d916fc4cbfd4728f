"""CPUs: interrupt state and inter-processor interrupts (IPIs).

A :class:`Cpu` runs one task at a time (``current``).  What the concurrency
protocols need from it is its *interrupt state*: ``local_irq_disable()``
makes the CPU deaf to IPIs until ``local_irq_enable()``.  An IPI round
(``smp_call_function_many``) runs its handler on every target CPU with
interrupts on at once, and on the others when they re-enable interrupts;
the sender then waits — a blocking op — until every target acknowledged.
That delay is what fast GUP and the SPF page-table walk rely on when page
tables are freed after an IPI round (``tlb_remove_table_sync_one``).

Interrupts-off is also an RCU read-side section (RCU-sched, consolidated
into RCU since Linux 4.20): the CPU's RCU domain (``cpu.rcu``) is told.

Fields
------
Cpu
# private to the CPU (only code running on it, or an IPI handler it runs)
    tlb            {(mm id, vpn): pte} cached translations (mm/tlb.py)
    irq_disabled   local_irq_disable() depth
    current        the task running on it
    pending_ipis   IPI rounds waiting for it to enable interrupts
# set once by the machine
    id, rcu        the RCU domain whose readers it may host (or None)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from specfault.runtime import STATE, ModelBug, Op
from specfault.sync.lockdep import SleepInAtomic


class Cpu:
    __slots__ = ("id", "tlb", "irq_disabled", "current", "pending_ipis", "rcu", "ipis_handled")

    def __init__(self, cpu_id: int, rcu: Any = None) -> None:
        self.id = cpu_id
        self.tlb: dict[tuple[int, int], int] = {}
        self.irq_disabled = 0
        self.current: Any = None
        self.pending_ipis: list[IpiRound] = []
        self.rcu = rcu
        self.ipis_handled = 0

    def label(self) -> str:
        return f"cpu{self.id}"

    def __repr__(self) -> str:
        return f"<Cpu {self.id}>"


class IpiRound:
    """One smp_call_function_many(): ``handler(cpu)`` on each target."""

    __slots__ = ("what", "handler", "unacked")

    def __init__(self, what: str, handler: Callable[[Cpu], None]) -> None:
        self.what = what
        self.handler = handler
        self.unacked: list[Cpu] = []

    def done(self) -> bool:
        return not self.unacked


def _deliver(cpu: Cpu) -> None:
    """``cpu`` enabled interrupts: run the IPI handlers it held off."""
    rounds, cpu.pending_ipis = cpu.pending_ipis, []
    for rnd in rounds:
        rnd.handler(cpu)
        cpu.ipis_handled += 1
        rnd.unacked.remove(cpu)


def _cpu_of(task: Any) -> Cpu | None:
    return task.cpu if task is not None else None


class IrqDisable(Op):
    """local_irq_disable(): the CPU stops taking IPIs; an RCU reader."""

    __slots__ = ()
    kind = "irq_disable"

    def perform(self) -> None:
        task = STATE.task
        if task is None:
            return
        task.irq_disabled += 1
        cpu = task.cpu
        if cpu is not None:
            cpu.irq_disabled += 1
            if cpu.rcu is not None:
                cpu.rcu.enter_irq_off(task)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        task = STATE.task
        cpu = _cpu_of(task)
        fp: tuple[tuple[object, str, str], ...] = ((cpu, "irq", "w"),) if cpu is not None else ()
        if cpu is not None and cpu.rcu is not None:
            fp += ((cpu.rcu, "gp", "r"),)
        return fp

    def describe(self) -> str:
        return "local_irq_disable"


class IrqEnable(IrqDisable):
    """local_irq_enable(): take the IPIs held off; leave the RCU section."""

    __slots__ = ()
    kind = "irq_enable"

    def perform(self) -> None:
        task = STATE.task
        if task is None:
            return
        if task.irq_disabled <= 0:
            raise ModelBug(f"local_irq_enable: interrupts already enabled on {task.name}'s CPU")
        task.irq_disabled -= 1
        cpu = task.cpu
        if cpu is not None:
            cpu.irq_disabled -= 1
            if cpu.irq_disabled == 0:
                if cpu.rcu is not None:
                    cpu.rcu.exit_irq_off(task)
                if cpu.pending_ipis:
                    _deliver(cpu)

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        task = STATE.task
        cpu = _cpu_of(task)
        if cpu is None:
            return ()
        # delivering held-off IPIs touches the senders' rounds and the TLB
        fp: tuple[tuple[object, str, str], ...] = ((cpu, "irq", "w"), (cpu, "tlb", "w"))
        if cpu.rcu is not None:
            fp += ((cpu.rcu, "gp", "r"),)
        return fp

    def describe(self) -> str:
        return "local_irq_enable"


_IRQ_OFF = IrqDisable()
_IRQ_ON = IrqEnable()


def local_irq_disable() -> IrqDisable:
    """``await local_irq_disable()``."""
    return _IRQ_OFF


def local_irq_enable() -> IrqEnable:
    """``await local_irq_enable()``."""
    return _IRQ_ON


def irqs_disabled() -> bool:
    """irqs_disabled() on the running task's CPU (not an interleaving point:
    the state is private to the CPU)."""
    task = STATE.task
    cpu = _cpu_of(task)
    return bool(cpu.irq_disabled) if cpu is not None else bool(task and task.irq_disabled)


class SendIpis(Op):
    """Send an IPI round to ``cpus`` (the sender's own CPU excluded): the
    handler runs now on CPUs with interrupts on, later on the others.
    Returns the :class:`IpiRound` (wait for it with :class:`WaitIpis`)."""

    __slots__ = ("cpus", "handler", "what")
    kind = "ipi_send"

    def __init__(self, cpus: Iterable[Cpu], handler: Callable[[Cpu], None], what: str) -> None:
        self.cpus = tuple(cpus)
        self.handler = handler
        self.what = what

    def perform(self) -> IpiRound:
        me = _cpu_of(STATE.task)
        rnd = IpiRound(self.what, self.handler)
        for cpu in sorted(self.cpus, key=lambda c: c.id):
            if cpu is me:
                continue
            if cpu.irq_disabled:
                cpu.pending_ipis.append(rnd)
                rnd.unacked.append(cpu)
            else:
                self.handler(cpu)
                cpu.ipis_handled += 1
        return rnd

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        fp: list[tuple[object, str, str]] = []
        for cpu in self.cpus:
            fp.append((cpu, "irq", "r"))
            fp.append((cpu, "tlb", "w"))
        return tuple(fp)

    def describe(self) -> str:
        ids = ",".join(str(c.id) for c in sorted(self.cpus, key=lambda c: c.id))
        return f"ipi {self.what} -> cpu[{ids}]"


class WaitIpis(Op):
    """Wait until every target of ``rnd`` acknowledged (csd_lock_wait)."""

    __slots__ = ("rnd",)
    kind = "ipi_wait"
    blocking = True
    spins = True

    def __init__(self, rnd: IpiRound) -> None:
        self.rnd = rnd

    def enabled(self) -> bool:
        return not self.rnd.unacked

    def perform(self) -> None:
        return None

    def footprint(self) -> tuple[tuple[object, str, str], ...]:
        return tuple((cpu, "irq", "r") for cpu in self.rnd.unacked)

    def describe(self) -> str:
        return f"wait ipi ack {self.rnd.what}"


async def smp_call_function_many(cpus: Iterable[Cpu], handler: Callable[[Cpu], None],
                                 what: str, wait: bool = True) -> None:
    """Run ``handler(cpu)`` on every other CPU of ``cpus``; with ``wait``,
    return only when all acknowledged.  Waiting with interrupts off could
    deadlock against another sender, so lockdep reports it."""
    task = STATE.task
    if task is not None and (task.irq_disabled or (task.cpu is not None and task.cpu.irq_disabled)):
        raise SleepInAtomic(f"smp_call_function_many({what}) by {task.name} with interrupts "
                            "disabled (can deadlock against another CPU's IPI round)")
    rnd = await SendIpis(cpus, handler, what)
    if wait and not rnd.done():
        await WaitIpis(rnd)
