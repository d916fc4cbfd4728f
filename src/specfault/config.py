"""The configuration: machine size and every protocol decision, as knobs.

One registry, :data:`KNOBS`, names every knob the model reads: its default,
its kind and what it decides.  Nothing else holds a default: ``Config``'s
fields take theirs from the registry, and :meth:`Config.knob` answers from
the registry when a Config does not set the knob.  An unknown name is an
error everywhere (:class:`UnknownKnob`, naming the closest valid one), so a
typo cannot silently run another protocol.

Kinds
-----
``protocol``  a design decision of a fault protocol (Linux's or a series'):
              ``fault_protocol`` and the decisions a protocol implies
``mutant``    a decision taken away: correct Linux behaviour is the default,
              and a mutant (check/mutants.py) is a named set of knob values
              that reproduces a pitfall or a historical bug
``cost``      changes only what the simulator charges, never behaviour
``model``     the machine: sizes, widths, which kernel era

Correct Linux behaviour is the default.  Model code reads a knob at the
exact line where the decision is made, with a comment saying what breaks
without it.

Protocol presets
----------------
A protocol may imply knob values (:data:`PROTOCOL_PRESETS`: Dufour's SPF is
the speculative fault with three decisions changed).  The preset is a
function of the protocol alone: ``Config.knobs`` holds only what was set
explicitly, and a lookup resolves explicit > preset of the current protocol
> registry default.  So ``cfg.with_(fault_protocol="speculative")`` from a
dufour Config runs the speculative protocol with none of dufour's knobs,
while a knob set explicitly (a mutant of the protocol) stays set.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

KINDS = ("protocol", "mutant", "cost", "model")

#: the values of ``Config.fault_protocol``
FAULT_PROTOCOLS = ("classic", "speculative", "pervma", "dufour")


@dataclass(frozen=True)
class Knob:
    """One entry of the registry."""

    name: str
    default: Any
    kind: str
    doc: str
    #: the values allowed (None: any value of the default's type)
    choices: tuple[Any, ...] | None = None
    #: a ``Config`` field (machine-wide, read often) rather than a ``knobs`` entry
    is_field: bool = False

    def check(self, value: Any) -> Any:
        """``value`` if it is valid for this knob, else ValueError naming it."""
        want = type(self.default)
        if want is bool:
            ok = isinstance(value, bool)
        elif want is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif want is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value)
        else:
            ok = isinstance(value, want)
        if not ok:
            raise ValueError(f"knob {self.name} takes a {want.__name__}, not {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"knob {self.name} must be one of "
                             f"{', '.join(map(str, self.choices))}, not {value!r}")
        return value

    def parse(self, text: str) -> Any:
        """The value a command-line string ``text`` stands for (then checked)."""
        want = type(self.default)
        t = text.strip()
        if want is bool:
            low = t.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"knob {self.name} takes true or false, not {text!r}")
        if want is int:
            try:
                return self.check(int(t, 0))
            except ValueError:
                raise ValueError(f"knob {self.name} takes an integer, not {text!r}") from None
        if want is float:
            try:
                return self.check(float(t))
            except ValueError:
                raise ValueError(f"knob {self.name} takes a finite number, not {text!r}") from None
        return self.check(t)


class UnknownKnob(TypeError, ValueError):  # noqa: N818  (Linux-style name)
    """A knob name the registry does not have.  Both a TypeError (an
    unexpected keyword, as Python reports one) and a ValueError (a bad
    value of a --knob option), so either ``except`` catches it."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        close = difflib.get_close_matches(name, list(KNOBS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else \
            " (specfault knobs lists them)"
        super().__init__(f"{where}unknown knob {name!r}{hint}")


def _knobs(*knobs: Knob) -> dict[str, Knob]:
    out: dict[str, Knob] = {}
    for k in knobs:
        assert k.kind in KINDS, k
        assert k.name not in out, k.name
        if k.choices is not None:
            assert k.default in k.choices, k
        out[k.name] = k
    return out


#: every knob the model reads, by name
KNOBS: dict[str, Knob] = _knobs(
    # ------------------------------------------------------------ the machine
    Knob("nr_frames", 1 << 18, "model",
         "physical frames available to the page allocator (4 KiB each)", is_field=True),
    Knob("nr_cpus", 4, "model",
         "simulated CPUs (threads run on them; each has a TLB)", is_field=True),
    Knob("fault_around_bytes", 65536, "model",
         "fault-around window for file read faults (a power of two >= 4096)", is_field=True),
    Knob("mm_lock_seq_bits", 64, "model",
         "width of mm_lock_seq in bits (64 since Linux 6.x; narrow = wraparound)", is_field=True),
    Knob("rcu_irqs_off_is_reader", True, "model",
         "an interrupts-off section holds off an RCU grace period (Linux 4.20+; "
         "False: the earlier world of separate RCU flavours)"),
    Knob("tlb_flush_paravirt", False, "model",
         "TLB flushes go through the hypervisor and never wait for an IPI, "
         "so interrupts-off does not hold a flush back (Xen PV, Hyper-V)"),
    Knob("swap_pages", 0, "model",
         "size of the swap device in pages, its header included (swapon); 0: no "
         "swap, as on the host — anonymous pages are then never reclaimed"),
    Knob("pt_reclaim", True, "model",
         "CONFIG_PT_RECLAIM (Linux 6.14+; the host's kernel has it): MADV_DONTNEED "
         "over a whole PMD's range frees the PTE table it empties (mm/pt_reclaim.py), "
         "under mmap_lock for read, after an RCU grace period (needs page_table_free=rcu)"),
    Knob("watermark_min", 0, "model",
         "the zone's min watermark in free pages (low and high: a quarter "
         "of it apart above); 0: no watermarks, no kswapd or direct reclaim"),
    Knob("transparent_hugepage", "madvise", "model",
         "/sys/kernel/mm/transparent_hugepage/enabled: always (every anonymous "
         "VMA holding an aligned 2 MiB range gets THPs on faults), madvise "
         "(only MADV_HUGEPAGE ones; the reference host's), never",
         ("always", "madvise", "never")),
    Knob("thp_use_zero_page", True, "model",
         "/sys/kernel/mm/transparent_hugepage/use_zero_page: a read fault "
         "where a THP may go maps the huge zero page"),
    # -------------------------------------------------------------- protocols
    Knob("fault_protocol", "classic", "protocol",
         "the arch fault entry: classic (mmap_lock), speculative (the seed, "
         "Lespinasse's SPF), pervma (Linux 6.4 per-VMA locks), dufour "
         "(Dufour's SPF: speculative with PROTOCOL_PRESETS['dufour'])",
         FAULT_PROTOCOLS, is_field=True),
    Knob("page_table_free", "rcu", "protocol",
         "how page tables are freed: rcu (MMU_GATHER_RCU_TABLE_FREE), ipi "
         "(after an IPI round every CPU acknowledged), immediate (a mutant)",
         ("rcu", "ipi", "immediate"), is_field=True),
    Knob("vma_free", "rcu", "protocol",
         "how VMAs are freed: rcu (call_rcu), immediate (a mutant)",
         ("rcu", "immediate"), is_field=True),
    Knob("spf_walk", "auto", "protocol",
         "how the speculative walk holds page tables: rcu (rcu_read_lock), irq "
         "(interrupts off), auto (irq when page_table_free=ipi, else rcu)",
         ("auto", "rcu", "irq")),
    Knob("spf_seq", "mm", "protocol",
         "what a speculative fault validates against: mm (the per-mm "
         "mm_lock_seq, Lespinasse) or vma (the per-VMA vm_sequence, Dufour)",
         ("mm", "vma")),
    Knob("spf_vma_refcount", False, "protocol",
         "each speculative attempt pins the VMA it found (Dufour's get_vma/put_vma)"),
    Knob("spf_vma_pin", False, "protocol",
         "the pin is honoured: a VMA is not freed while pinned (vm_ref_count)"),
    Knob("spf_swap", "abort", "protocol",
         "a speculative fault on a swap PTE: abort (Lespinasse's v2: "
         "do_swap_page does not speculate, SPF_ABORT_SWAP) or cache (Dufour's "
         "v11: a swap-cache hit is handled speculatively, a miss aborts — no "
         "I/O or readahead while speculating)", ("abort", "cache")),
    Knob("collapse_vma_start_write", True, "protocol",
         "khugepaged's collapse write-locks the VMA (vma_start_write, Linux 6.4+: "
         "per-VMA faults and Dufour's per-VMA sequence see it); False: mmap_lock "
         "for write only, as in the kernels of Dufour's SPF, where the "
         "interrupts-off commit (spf_walk=irq) and pmd_same must see it"),
    Knob("vma_typesafe_rcu", False, "protocol",
         "VMAs come from a SLAB_TYPESAFE_BY_RCU cache: a freed VMA may be "
         "reused at once as another VMA (readers re-check what they locked)"),
    # ------------------------------------------------------------------- cost
    Knob("spf_mm_rb_rwlock", False, "cost",
         "the speculative lookup runs under read_lock(&mm->mm_rb_lock) "
         "(Dufour's series; excludes no one in the model, only its line traffic)"),
    # ---------------------------------------------------------------- mutants
    Knob("no_seq2_check", False, "mutant",
         "pte_map_lock skips the sequence check after taking the PTL"),
    Knob("no_seq_check_after_lookup", False, "mutant",
         "the VMA copy taken by the lockless lookup is not validated"),
    Knob("no_seq_bump_on_write_lock", False, "mutant",
         "mmap_write_lock() does not bump mm_lock_seq"),
    Knob("speculate_while_odd", False, "mutant",
         "speculation starts while a writer holds mmap_lock (odd count)"),
    Knob("no_pte_none_recheck", False, "mutant",
         "do_anonymous_page installs its page without re-checking pte_none under the PTL"),
    Knob("no_pte_same_recheck_wp", False, "mutant",
         "wp_page_copy replaces the PTE without checking it still maps the page it copied"),
    Knob("no_page_ref_in_wp_copy", False, "mutant",
         "wp_page_copy copies the old page without holding a reference"),
    Knob("no_isize_recheck_after_lock", False, "mutant",
         "filemap_fault does not re-check i_size under the folio lock: a page it "
         "inserted after truncation swept the cache is mapped beyond EOF"),
    Knob("no_folio_mapping_recheck", False, "mutant",
         "filemap_fault does not re-check folio->mapping under the folio lock: it "
         "maps a page truncation or a hole punch already removed from the file"),
    Knob("truncate_drops_before_unmap", False, "mutant",
         "truncation and hole punching remove a page from the page cache before "
         "unmapping it (and skip the first unmap_mapping_range)"),
    Knob("vma_recheck_not_mm_seq", False, "mutant",
         "the commit re-checks only the VMA, not mm_lock_seq (the COW ABA)"),
    Knob("dufour_seq_loads_reordered", False, "mutant",
         "Dufour's begin loads mm_lock_seq before the VMA's sequence"),
    Knob("dufour_no_detached_check", False, "mutant",
         "Dufour's vma_has_changed() ignores that the VMA was detached"),
    Knob("pervma_no_recheck_after_lock", False, "mutant",
         "lock_vma_under_rcu() does not re-check the VMA after locking it"),
    Knob("pervma_fork_no_vma_lock", False, "mutant",
         "dup_mmap() does not write-lock the parent's VMAs before COW-protecting them"),
    Knob("try_to_unmap_no_ptl", False, "mutant",
         "the reverse-map walkers (try_to_unmap, folio_referenced) read and "
         "change PTEs without taking the PTL"),
    Knob("reclaim_free_before_flush", False, "mutant",
         "shrink_folio_list frees reclaimed folios (and writes dirty ones out) "
         "before the deferred TLB flush of their unmapped PTEs"),
    Knob("no_pte_same_after_swapin", False, "mutant",
         "do_swap_page maps the folio it read without re-checking, under the "
         "PTL, that the PTE still holds the swap entry"),
    Knob("pervma_mprotect_no_vma_lock", False, "mutant",
         "mprotect does not write-lock the VMA before changing its PTEs"),
    # mutants nobody tuned the scenarios to (check/mutants.py, docs/protocols.md)
    Knob("wp_no_pte_same_recheck", False, "mutant",
         "handle_pte_fault sends a write to a write-protected PTE to do_wp_page "
         "without re-checking the PTE under the PTL"),
    Knob("wp_copy_no_flush", False, "mutant",
         "wp_page_copy replaces the old read-only PTE without flushing the TLBs"),
    Knob("wp_copy_no_anon_vma_prepare", False, "mutant",
         "wp_page_copy assumes the VMA has an anon_vma (not so after a zero-page read fault)"),
    Knob("pervma_mremap_no_vma_lock", False, "mutant",
         "mremap's move_vma does not write-lock the source VMA"),
    Knob("pervma_unlock_before_ptl", False, "mutant",
         "the per-VMA fault drops the VMA lock before the handler takes the PTL"),
    Knob("fork_no_wrprotect_parent", False, "mutant",
         "fork write-protects the child's copy of a PTE but not the parent's"),
    Knob("fork_flush_before_wrprotect", False, "mutant",
         "fork flushes the parent's TLBs before write-protecting its PTEs, not after"),
    Knob("mprotect_no_flush_on_wrprotect", False, "mutant",
         "mprotect skips the TLB flush when PTEs only lose write permission"),
    Knob("madv_free_no_flush", False, "mutant",
         "MADV_FREE cleans the PTEs' dirty bits without flushing the TLBs"),
    Knob("tlb_free_pages_before_flush", False, "mutant",
         "the mmu_gather frees its pages before the TLB flush, not after"),
    Knob("vma_merge_free_immediate", False, "mutant",
         "a VMA absorbed by an mprotect/madvise merge is freed at once, not after RCU"),
    Knob("spf_walk_end_early", False, "mutant",
         "the speculative walk leaves its RCU section before reading the PTE"),
    Knob("spf_no_pmd_same", False, "mutant",
         "the speculative commit does not check that the PMD still holds the PTE table"),
    Knob("spf_pmd_same_before_ptl", False, "mutant",
         "the speculative commit checks pmd_same before the PTL trylock only "
         "(Lespinasse's order), not under the PTL"),
    Knob("pt_reclaim_free_immediate", False, "mutant",
         "a PTE table reclaimed by MADV_DONTNEED is freed at once, not after RCU"),
    Knob("migration_entry_no_wait", False, "mutant",
         "a fault on a migration entry maps the page the entry names itself "
         "(re-checking the PTE under the PTL) instead of waiting for the migration"),
    Knob("migration_map_no_pte_same", False, "mutant",
         "a fault on a migration entry maps the page the entry names itself, "
         "without re-checking under the PTL that the PTE still holds the entry"),
    Knob("migration_copy_before_flush", False, "mutant",
         "migration copies the folio before the batched TLB flush of its unmapped PTEs"),
    Knob("mremap_no_src_ptl", False, "mutant",
         "mremap's move_ptes moves PTEs holding only the destination table's PTL"),
    Knob("dufour_seq_after_copy", False, "mutant",
         "Dufour's fault copies the VMA before sampling its sequence"),
)

#: Laurent Dufour's SPF (v11, 2017-2019, shipped in Android kernels) is the
#: speculative fault of ``mm/fault.py`` with these decisions changed:
DUFOUR_KNOBS: dict[str, Any] = {
    # a per-VMA sequence (vma->vm_sequence) instead of the per-mm
    # mm_lock_seq: only a writer that changed *this* VMA aborts the fault
    "spf_seq": "vma",
    # get_vma()/put_vma(): each attempt pins the VMA it found ...
    "spf_vma_refcount": True,
    # ... and the pin is honoured: the VMA is not freed while pinned
    "spf_vma_pin": True,
    # the lookup runs under read_lock(&mm->mm_rb_lock) (a cost only here)
    "spf_mm_rb_rwlock": True,
    # a swap PTE whose folio is in the swap cache is mapped speculatively
    # ("mm: don't do swap readahead during speculative page fault": a miss
    # aborts)
    "spf_swap": "cache",
}

#: knobs a protocol implies; a function of the protocol alone (see the
#: module doc): explicit knobs win, and another protocol drops them
PROTOCOL_PRESETS: dict[str, dict[str, Any]] = {"dufour": DUFOUR_KNOBS}


def preset(protocol: str) -> dict[str, Any]:
    """The knob values ``protocol`` implies (empty for most)."""
    return dict(PROTOCOL_PRESETS.get(protocol, {}))


def knob_info(name: str) -> Knob:
    """The registry entry for ``name`` (UnknownKnob if there is none)."""
    try:
        return KNOBS[name]
    except KeyError:
        raise UnknownKnob(name) from None


def parse_knobs(pairs: Mapping[str, str]) -> dict[str, Any]:
    """Command-line ``name=value`` strings to typed, validated knob values."""
    return {name: knob_info(name).parse(text) for name, text in pairs.items()}


_FIELD_NAMES: frozenset[str] = frozenset(k.name for k in KNOBS.values() if k.is_field)
#: the defaults of the knobs kept in ``Config.knobs``
_KNOB_DEFAULTS: dict[str, Any] = {k.name: k.default for k in KNOBS.values() if not k.is_field}


def _default(name: str) -> Any:
    return KNOBS[name].default


@dataclass(frozen=True)
class Config:
    """A machine's configuration: see :data:`KNOBS` for every name.

    Fields are the knobs the model reads on hot paths or at boot; every
    other knob lives in ``knobs`` (only those set explicitly).  Build one
    with keywords (``Config(fault_protocol="pervma", knobs={...})``) or
    derive one with :meth:`with_`; both reject unknown names."""

    nr_frames: int = _default("nr_frames")
    nr_cpus: int = _default("nr_cpus")
    fault_protocol: str = _default("fault_protocol")
    page_table_free: str = _default("page_table_free")
    vma_free: str = _default("vma_free")
    fault_around_bytes: int = _default("fault_around_bytes")
    mm_lock_seq_bits: int = _default("mm_lock_seq_bits")
    #: knobs set explicitly (not fields), by name
    knobs: dict[str, Any] = field(default_factory=dict)
    #: every non-field knob resolved: explicit > protocol preset > default
    _resolved: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _FIELD_NAMES:
            KNOBS[name].check(getattr(self, name))
        if not isinstance(self.knobs, Mapping):
            raise TypeError(f"Config: knobs must be a dict, not {type(self.knobs).__name__}")
        for name, value in self.knobs.items():
            if name in _FIELD_NAMES:
                raise ValueError(f"Config: {name} is a Config field, not a knobs entry: "
                                 f"pass {name}=... directly")
            knob_info(name).check(value)
        object.__setattr__(self, "knobs", dict(self.knobs))
        if self.nr_frames < 1:
            raise ValueError(f"Config: nr_frames must be positive, not {self.nr_frames}")
        if self.nr_cpus < 1:
            raise ValueError(f"Config: nr_cpus must be positive, not {self.nr_cpus}")
        far = self.fault_around_bytes
        if far < 4096 or far & (far - 1):
            raise ValueError(f"Config: fault_around_bytes must be a power of two >= 4096, not {far}")
        if not 1 <= self.mm_lock_seq_bits <= 64:
            raise ValueError(f"Config: mm_lock_seq_bits must be 1..64, not {self.mm_lock_seq_bits}")
        object.__setattr__(self, "_resolved",
                           {**_KNOB_DEFAULTS, **preset(self.fault_protocol), **self.knobs})

    def with_(self, **changes: Any) -> Config:
        """A copy with some knobs changed, fields or not (unknown names:
        :class:`UnknownKnob`).  The protocol preset follows the protocol."""
        direct: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, value in changes.items():
            if name in _FIELD_NAMES:
                direct[name] = value
            elif name in KNOBS:
                extra[name] = value
            else:
                raise UnknownKnob(name, "Config.with_: ")
        return replace(self, **direct, knobs={**self.knobs, **extra})

    def knob(self, name: str) -> Any:
        """The value of knob ``name`` in this Config (field or not)."""
        try:
            return self._resolved[name]
        except KeyError:
            if name in _FIELD_NAMES:
                return getattr(self, name)
            raise UnknownKnob(name) from None

    def explicit(self) -> dict[str, Any]:
        """Every knob whose value differs from the registry default (fields
        included): what a report should print to say how this ran."""
        out = {n: getattr(self, n) for n in sorted(_FIELD_NAMES)
               if getattr(self, n) != KNOBS[n].default}
        out.update({n: v for n, v in sorted(self._resolved.items()) if v != KNOBS[n].default})
        return out


def knob_table(kind: str | None = None) -> list[dict[str, Any]]:
    """The registry as rows (name, kind, default, choices, doc), for listings."""
    rows = []
    for k in KNOBS.values():
        if kind is not None and k.kind != kind:
            continue
        rows.append({"name": k.name, "kind": k.kind, "default": k.default,
                     "choices": list(k.choices) if k.choices is not None else None,
                     "field": k.is_field, "doc": k.doc})
    return rows


_INIT_NAMES = frozenset(f.name for f in fields(Config) if f.init)
_dataclass_init = Config.__init__


def _config_init(self: Config, *args: Any, **kwargs: Any) -> None:
    # the dataclass __init__, with an unknown keyword named with its closest
    # valid spelling (Config(fault_protcol=...) is a typo, not a new knob);
    # a registered knob that is not a field goes into ``knobs``
    extra = {}
    for name in list(kwargs):
        if name not in _INIT_NAMES:
            if name not in KNOBS:
                raise UnknownKnob(name, "Config(): ")
            extra[name] = kwargs.pop(name)
    if extra:
        kwargs["knobs"] = {**dict(kwargs.get("knobs") or {}), **extra}
    _dataclass_init(self, *args, **kwargs)


Config.__init__ = _config_init  # type: ignore[method-assign]
