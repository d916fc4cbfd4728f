"""The cost model: how much simulated time each op of the model costs.

Why it is shaped so
-------------------
The simulator runs the model's own code; every op it yields is charged here.
Nothing is tuned per workload: one :class:`CostProfile` (a dataclass,
loadable from JSON, written by ``specfault calibrate``) drives every run.
The costs are of five kinds.

1. **CPU work per op.**  A memory op that hits in the CPU's cache costs
   ``op_ns``.  ``Work(kind)`` ops cost ``work_ns[kind]`` (clear_page,
   copy_page, zap, ...).  A user access costs ``user_access_ns``; one that
   raises a page fault adds ``fault_entry_ns`` — the exception entry/exit
   and the part of the fault path the model executes as plain Python between
   ops (x86 ``asm_exc_page_fault`` → ``do_user_addr_fault`` bookkeeping,
   memcg charge, LRU add...).  ``calibrate`` derives it from the host's
   measured minor-fault cost minus what the other entries already charge.
   A write acquisition of ``mmap_lock`` adds ``vma_modify_ns``: the VMA-tree
   and VMA-struct work the model does in plain Python inside the write
   section (maple-tree store, vma_merge, split) — charged when the writer
   gets the lock (at once, or at its grant after queueing), never while it
   waits: the rwsem op's result says which (``sync/rwsem.py``,
   :class:`~specfault.sync.rwsem.Acquired`), nothing here re-derives it.

2. **Cache-line ownership** (a MESI directory, one entry per line).  Lines
   are named by the op's ``footprint()``: ``(object, field)``, with PTE slots
   grouped 8 to a 64-byte line and the VMA's read-mostly fields in one line.
   A read of a line another CPU holds modified, or a write/atomic to a line
   another CPU holds, is a *transfer* costing ``line_transfer_ns``; transfers
   of one line serialise (``busy_until``), so a line written by every fault
   (the rwsem count of ``mmap_lock``, a VMA's refcount) caps throughput at
   one holder per transfer however many CPUs fault — while a seqcount that
   is only *read* stays shared in every cache and costs ``op_ns``.  A line
   not in the CPU's cache but not dirty elsewhere costs ``llc_ns``.
   Source: the "cache line bouncing" analysis of rwsem read-side scaling
   (Lespinasse's SPF v1/v2 cover letters; David, Guerraoui, Trigonakis,
   "Everything you always wanted to know about synchronization but were
   afraid to ask", SOSP 2013: 100-300 ns cross-socket transfer on Xeons).

3. **Locks.**  Spinlock waiters spin: the CPU stays busy, and the hand-off is
   the lock line's transfer.  rwsem waiters (and VMA-lock drains) sleep:
   the CPU runs another task, and the wakeup costs ``wakeup_ns`` (try_to_wake_up
   + the context switch, ``context_switch_ns``).  Both emerge from the
   model's own lock ops; the engine measures waits and holds.

4. **Pages.**  ``alloc_page`` is served from a per-CPU list (``pcp_batch``
   pages); refilling it takes the zone lock, one serialised resource for the
   machine, for ``zone_lock_ns`` per page.  Memory pressure is the model's
   own mechanism (mm/vmscan.py), not a cost here: with watermarks set
   (knob ``watermark_min``), an allocation below low wakes ``kswapd`` (a
   kernel thread the engine runs on a CPU) and one at or below min
   reclaims directly, inside the fault.  Reclaim's ops are charged like
   every op (the LRU lock, each folio's lock, the PTLs and TLB flushes of
   ``try_to_unmap``), plus per-page work: ``reclaim_scan`` for each folio
   isolated and asked ``folio_referenced`` (an rmap walk), ``reclaim_unmap``
   for each PTE ``try_to_unmap`` clears.  So direct reclaim costs what it
   scans.  Waiting for I/O is off-CPU time: a ``Work`` kind named in
   ``io_ns`` puts the thread to sleep for that long, its CPU free for
   others — ``swap_read`` (``do_swap_page``'s read, a major fault) and
   ``swap_write`` (the model writes a folio out synchronously before it
   frees it, as MADV_PAGEOUT is seen to on the host; Linux's kswapd does
   not wait for the write, so this overstates kswapd's time, not the
   fault's).
   clear_page/copy_page also consume DRAM bandwidth (``dram_gbps``, one
   serialised channel): at high CPU counts the zeroing itself saturates memory,
   which is what bounds even lockless faults.

5. **IPIs and RCU.**  A TLB shootdown costs the sender ``ipi_send_ns`` plus
   ``ipi_per_cpu_ns`` per target, and steals ``ipi_handler_ns`` from each
   target CPU.  RCU callbacks run at the first grace-period tick
   (``rcu_gp_ns`` apart) after their readers quiesced; ``synchronize_rcu``
   sleeps until then.

Default values (a 2-socket Haswell-class server, the machine of the SPF
cover letters) are documented per field; ``calibrate`` replaces the ones it
can measure on the host.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from specfault.mm.access import PageFault, UserAccess
from specfault.mm.page import AllocPage, PutPage
from specfault.mm.tlb import FlushTlb
from specfault.runtime import Load, LoadItem, Store, StoreItem, Work
from specfault.sync.cpu import SendIpis
from specfault.sync.rwsem import Acquired

PAGE = 4096


def _default_work() -> dict[str, float]:
    return {
        "clear_page": 250.0,      # rep stosb of 4 KiB, cache-cold destination
        "copy_page": 350.0,       # copy_user_highpage, one side cold
        "pgtable_alloc": 400.0,   # pte_alloc_one + zeroing a 4 KiB table
        "zap": 30.0,              # zap_pte_range, per PTE
        "move_ptes": 30.0,        # per PTE moved
        "read_page": 2000.0,      # page-cache fill (a minor, cached read)
        "page_mkwrite": 300.0,    # shared file write notification
        "user_ns": 1.0,           # workload's own user-space time, per ns
        "syscall": 150.0,         # syscall entry/exit (with mitigations)
        # reclaim (mm/vmscan.py), per page; measured on the reference host
        # (benchmarks/bench_pressure_vs_host.py --costs): MADV_PAGEOUT of
        # clean, mapped file pages costs ~1.5 us a page
        "reclaim_scan": 1000.0,   # isolate, folio_referenced's rmap walk, __remove_mapping, free
        "reclaim_unmap": 500.0,   # try_to_unmap_one: clear the PTE, rmap/RSS bookkeeping
    }


def _default_io() -> dict[str, float]:
    # waits for I/O, off-CPU; measured on the reference host (a swap file
    # on a virtio disk; benchmarks/bench_pressure_vs_host.py --costs)
    return {
        "swap_read": 10_000.0,    # swap_read_folio: a 4 KiB read, waited for (major fault)
        "swap_write": 20_000.0,   # swap_writepage: MADV_PAGEOUT of an anon page ~24 us in all
    }


@dataclass
class CostProfile:
    """Every cost the simulator charges, in nanoseconds unless named."""

    #: a cached memory op (L1/L2 hit)
    op_ns: float = 2.0
    #: a line read from the LLC / memory when nobody holds it dirty
    llc_ns: float = 25.0
    #: moving a line another CPU holds (dirty read or RFO); serialises per line
    line_transfer_ns: float = 110.0
    #: a user load/store that hits the TLB
    user_access_ns: float = 2.0
    #: exception entry/exit plus the fault path's un-modelled bookkeeping
    fault_entry_ns: float = 700.0
    #: VMA-tree/VMA work inside one mmap_lock write section
    vma_modify_ns: float = 900.0
    #: Work(kind) costs, per unit
    work_ns: dict[str, float] = field(default_factory=_default_work)
    #: waking a sleeping task (try_to_wake_up to running)
    wakeup_ns: float = 2500.0
    #: switching a CPU from one task to another
    context_switch_ns: float = 1200.0
    #: a task's time slice when more tasks than CPUs are runnable
    timeslice_ns: float = 3_000_000.0
    #: pages a CPU's pcp list takes per refill / gives back per drain
    pcp_batch: int = 63
    #: zone->lock hold time per page moved between zone and pcp
    zone_lock_ns: float = 25.0
    #: Work(kind) that is a wait for I/O (off-CPU), per unit
    io_ns: dict[str, float] = field(default_factory=_default_io)
    #: DRAM bandwidth, all sockets (clear/copy page traffic), GB/s
    dram_gbps: float = 100.0
    #: TLB shootdown: sender's fixed cost, per-target cost, target's handler
    ipi_send_ns: float = 1500.0
    ipi_per_cpu_ns: float = 150.0
    ipi_handler_ns: float = 1000.0
    #: RCU grace-period tick
    rcu_gp_ns: float = 1_000_000.0
    #: where the numbers came from
    source: str = "defaults: 2-socket Haswell-class server (see module docstring)"

    @classmethod
    def load(cls, path: str | Path) -> CostProfile:
        """Read a profile written by :meth:`save` (unknown keys are errors)."""
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise ValueError(f"{path}: unknown cost profile keys: {', '.join(bad)}")
        work = _default_work()
        work.update(data.pop("work_ns", {}))
        io = _default_io()
        io.update(data.pop("io_ns", {}))
        return cls(work_ns=work, io_ns=io, **data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


# fields of one object that live in one cache line (else: one line per field)
_VMA_MAIN = "vma"
_GROUP = {
    "vm_start": _VMA_MAIN, "vm_end": _VMA_MAIN, "vm_flags": _VMA_MAIN, "vm_pgoff": _VMA_MAIN,
    "vm_file": _VMA_MAIN, "anon_vma": _VMA_MAIN, "fields": _VMA_MAIN, "vm_mm": _VMA_MAIN,
    "vm_lock_seq": _VMA_MAIN, "vm_page_prot": _VMA_MAIN,
}

#: the line names of PTE slots: slots ``i`` share the line ``str(i >> 3)``
#: (8 PTEs to a 64-byte line); the strings for a 512-entry table, made once
_NSLOT = 64
_SLOT_LINE = tuple(str(i) for i in range(_NSLOT))


class Line:
    """Directory entry of one cache line."""

    __slots__ = ("owner", "sharers", "busy_until", "obj")

    def __init__(self, obj: object = None) -> None:
        # keeps the object alive: lines are keyed by id(), which must not be
        # reused by a new object during the run (determinism)
        self.obj = obj
        self.owner = -1          # CPU holding it modified/exclusive, or -1
        self.sharers = 0         # bitmask of CPUs holding it shared
        self.busy_until = 0.0    # end of the last transfer (transfers serialise)


class CostModel:
    """Charges ops; owns the machine-wide resources (lines, zone lock, DRAM).

    ``charge(op, cpu, t)`` returns the op's latency before it is performed
    (footprint-based); ``after(op, result, cpu, t)`` adds result-dependent
    costs (a user access that faulted, an allocation in reclaim).
    """

    def __init__(self, profile: CostProfile, nr_frames: int, ncpus: int) -> None:
        self.p = profile
        #: the VMA work charged to an acquisition of an rwsem for write
        #: (see after()); the engine's lock statistics read it
        self.vma_modify_ns = profile.vma_modify_ns
        self.lines: dict[tuple[int, str], Line] = {}
        self.transfers = 0
        self.nr_frames = nr_frames
        self.pcp = [0] * ncpus
        self.zone_busy = 0.0
        self.dram_busy = 0.0
        self.dram_ns_per_page = PAGE / profile.dram_gbps    # GB/s = bytes/ns
        self.stolen = [0.0] * ncpus                         # IPI handler time owed
        self.zone_wait = 0.0
        w = profile.work_ns
        self.work = dict(w)
        self.op_ns = profile.op_ns
        self.llc_ns = profile.llc_ns
        self.transfer_ns = profile.line_transfer_ns
        self.user_access_ns = profile.user_access_ns
        self._how: dict[type, Any] = {}      # op class -> its _charge_* method

    # -- cache lines --
    def line(self, obj: object, fld: str) -> Line:
        key = (id(obj), fld)
        ln = self.lines.get(key)
        if ln is None:
            ln = self.lines[key] = Line(obj)
        return ln

    def touch(self, obj: object, fld: str, write: bool, cpu: int, t: float) -> float:
        """Latency of one access by ``cpu`` at ``t`` to the line holding
        ``obj.fld``; updates the directory."""
        return self._access(obj, _GROUP.get(fld, fld), write, cpu, t)

    def _access(self, obj: object, line: str, write: bool, cpu: int, t: float) -> float:
        """:meth:`touch` of the line named ``line`` of ``obj`` (already
        grouped: ``_GROUP`` applied)."""
        key = (id(obj), line)
        ln = self.lines.get(key)
        if ln is None:
            ln = self.lines[key] = Line(obj)
        owner = ln.owner
        if write:
            if owner == cpu:
                return self.op_ns
            if owner < 0:
                sharers = ln.sharers
                if sharers == 1 << cpu:
                    ln.owner = cpu            # upgrade S->M, nobody else holds it
                    return self.op_ns
                if not sharers:
                    ln.owner, ln.sharers = cpu, 1 << cpu
                    return self.llc_ns
        else:
            if owner == cpu:
                return self.op_ns
            if owner < 0:
                if ln.sharers >> cpu & 1:
                    return self.op_ns
                ln.sharers |= 1 << cpu
                return self.llc_ns
        # a transfer: from the dirty owner, or an RFO invalidating sharers
        self.transfers += 1
        start = ln.busy_until if ln.busy_until > t else t
        end = start + self.transfer_ns
        ln.busy_until = end
        if write:
            ln.owner, ln.sharers = cpu, 1 << cpu
        else:
            ln.sharers = 1 << cpu | (1 << owner if owner >= 0 else 0) | ln.sharers
            ln.owner = -1
        return end - t

    # -- the op table --
    def charge(self, op: Any, cpu: int, t: float) -> float:
        """The op's latency on ``cpu`` at ``t``, before it is performed: IPI
        handler time the CPU owes first, then by op class, else the lines
        of its footprint (see :meth:`_route`)."""
        cost = self.stolen[cpu]
        if cost:
            self.stolen[cpu] = 0.0
        tp = type(op)
        if tp is LoadItem or tp is Load:
            # the commonest ops, reads: what _charge_read() does, with the
            # read hit (most of them; it changes no line) done here
            if tp is LoadItem:
                obj = op.owner
                i = op.index >> 3
                name = _SLOT_LINE[i] if 0 <= i < _NSLOT else str(i)
            else:
                obj = op.obj
                name = _GROUP.get(op.attr, op.attr)
            ln = self.lines.get((id(obj), name))
            if ln is not None:
                owner = ln.owner
                if owner == cpu or (owner < 0 and ln.sharers >> cpu & 1):
                    return cost + self.op_ns
            return cost + self._access(obj, name, False, cpu, t)
        try:
            how = self._how[tp]
        except KeyError:
            how = self._how[tp] = self._route(tp)
        return how(op, cpu, t, cost)

    def _route(self, tp: type) -> Any:
        """How ops of class ``tp`` are charged: by the nearest class in its
        MRO that has a way of its own (a FlushTlb is an IPI send charged as
        a TLB flush), else by footprint.  Each way is a method
        ``(op, cpu, t, cost) -> cost`` adding the op's latency to ``cost``
        (the IPI time owed)."""
        by_class = {LoadItem: self._charge_read, Load: self._charge_read,
                    StoreItem: self._charge_write, Store: self._charge_write,
                    Work: self._charge_work, UserAccess: self._charge_user,
                    AllocPage: self._charge_alloc, PutPage: self._charge_put,
                    FlushTlb: self._charge_tlb_flush, SendIpis: self._charge_ipi_send}
        for cls in tp.__mro__:
            how = by_class.get(cls)
            if how is not None:
                return how
        return self._charge_footprint

    @staticmethod
    def _line_of(op: Any) -> tuple[object, str]:
        """The line a Load/Store/LoadItem/StoreItem touches, as touch()
        names it: _GROUP maps no PTE slot line ("0".."63")."""
        if type(op) is LoadItem or type(op) is StoreItem:
            i = op.index >> 3
            return op.owner, _SLOT_LINE[i] if 0 <= i < _NSLOT else str(i)
        return op.obj, _GROUP.get(op.attr, op.attr)

    def _charge_read(self, op: Any, cpu: int, t: float, cost: float) -> float:
        obj, name = self._line_of(op)
        return cost + self._access(obj, name, False, cpu, t)

    def _charge_write(self, op: Any, cpu: int, t: float, cost: float) -> float:
        obj, name = self._line_of(op)
        return cost + self._access(obj, name, True, cpu, t)

    def _charge_user(self, op: Any, cpu: int, t: float, cost: float) -> float:
        return cost + self.user_access_ns

    def _charge_alloc(self, op: Any, cpu: int, t: float, cost: float) -> float:
        return cost + self._alloc(cpu, t)

    def _charge_put(self, op: Any, cpu: int, t: float, cost: float) -> float:
        return cost + self._free(cpu, t) + self.touch(op.page, "refcount", True, cpu, t)

    def _charge_tlb_flush(self, op: Any, cpu: int, t: float, cost: float) -> float:
        n = sum(1 for c in op.cpus if c.id != cpu)
        for c in op.cpus:
            if c.id != cpu and c.id < len(self.stolen):
                self.stolen[c.id] += self.p.ipi_handler_ns
        return cost + self.p.ipi_send_ns + n * self.p.ipi_per_cpu_ns

    def _charge_ipi_send(self, op: Any, cpu: int, t: float, cost: float) -> float:
        n = len(op.cpus)
        for c in op.cpus:
            if c.id != cpu and c.id < len(self.stolen):
                self.stolen[c.id] += self.p.ipi_handler_ns
        return cost + self.p.ipi_send_ns + n * self.p.ipi_per_cpu_ns

    def _charge_footprint(self, op: Any, cpu: int, t: float, cost: float) -> float:
        for obj, fld, mode in op.footprint():
            if type(obj) is str and obj == "*":     # the wildcard (a Call)
                cost += self.op_ns * 10
                continue
            name = _GROUP.get(fld, fld)
            if mode != "w":
                # a read hit (as in charge()): what _access() returns for it
                ln = self.lines.get((id(obj), name))
                if ln is not None:
                    owner = ln.owner
                    if owner == cpu or (owner < 0 and ln.sharers >> cpu & 1):
                        cost += self.op_ns
                        continue
            cost += self._access(obj, name, mode == "w", cpu, t)     # touch()
        return cost or self.op_ns

    def _charge_work(self, op: Any, cpu: int, t: float, cost: float) -> float:
        what = op.what
        ns = self.work.get(what)
        if ns is None:
            ns = self.work[what] = 100.0     # an unknown kind: a small constant
        ns *= op.amount
        if what == "clear_page" or what == "copy_page":
            need = self.dram_ns_per_page * (2 if what == "copy_page" else 1)
            start = self.dram_busy if self.dram_busy > t else t
            self.dram_busy = start + need
            if self.dram_busy - t > ns:
                return cost + (self.dram_busy - t)
        return cost + ns

    #: the result types :meth:`after` charges for (it is 0.0 for any other)
    after_types: frozenset[type] = frozenset({PageFault, Acquired})

    def after(self, op: Any, result: Any, cpu: int, t: float) -> float:
        """Result-dependent cost (called after perform): a user access that
        faulted pays the fault entry; an rwsem op that took the lock for
        write (at once, by trylock, or at its grant after queueing: its
        :class:`~specfault.sync.rwsem.Acquired` result says so) pays the
        VMA work done inside the write section, ``vma_modify_ns`` — a
        down_write that only queues pays none, so a queue of writers hands
        the lock on only after each one's work."""
        tp = type(result)
        if tp is PageFault:
            return self.p.fault_entry_ns
        if tp is Acquired and result.write and op.sem.name.startswith("mmap_lock"):
            # only mmap_lock's write sections do VMA work (a folio lock or
            # the inode lock taken for write does none)
            return self.vma_modify_ns
        return 0.0

    # -- resources --
    def _zone(self, t: float, pages: int) -> float:
        start = self.zone_busy if self.zone_busy > t else t
        end = start + pages * self.p.zone_lock_ns + self.p.line_transfer_ns
        self.zone_busy = end
        self.zone_wait += start - t
        return end - t

    def _alloc(self, cpu: int, t: float) -> float:
        cost = self.op_ns * 10
        if self.pcp[cpu] <= 0:
            batch = self.p.pcp_batch
            cost += self._zone(t, batch)
            self.pcp[cpu] = batch
        self.pcp[cpu] -= 1
        return cost

    def _free(self, cpu: int, t: float) -> float:
        self.pcp[cpu] += 1
        if self.pcp[cpu] > 2 * self.p.pcp_batch:
            self.pcp[cpu] -= self.p.pcp_batch
            return self._zone(t, self.p.pcp_batch)
        return self.op_ns * 5
