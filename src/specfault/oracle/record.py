"""Records: what one side (host or model) observed, normalised so the two compare.

A *record* is a JSON object::

    {"side": "host", "initial": SNAP, "steps": [{"result": RES, "state": SNAP}, ...],
     "error": null}

In swap mode a step also carries ``"counters"``: the step's deltas of
COUNTERS (``{"pswpin": 0, "pswpout": 4, "majflt": 0}``).

``SNAP`` maps each live process number (as a string) to::

    {"maps":  ["-4..0 ---p 0 anon", "0..4 rw-p 0 anon", ...],   # VMAs meeting the window
     "pages": ["", "P=z", "Px=a3", "Pxf=a5", "S=s0", ...],     # one per window page
     "smaps": ["0..4 Rss=8 Anonymous=8", ...]}                  # kB, per VMA in the window

Page numbers are relative to the region start (guards are negative or >=
region).  A page entry is "" when pagemap reports nothing, else a letter
per bit -- ``P`` present, ``S`` swapped, ``x`` exclusively mapped, ``f``
file-page or shared-anon -- then ``=`` and the frame's *label*: ``z`` for
the zero page, otherwise a name that two entries share iff they map the
same frame.  Labels persist across steps while a frame stays mapped, so
"the write reused the frame" and "the write copied it" are different
records.  A swapped entry (``S``) is labelled the same way by its swap
slot (type and offset): ``S=s0`` -- two entries share a label iff they
hold the same slot (a fork's copies), and a label persists while some
PTE holds the slot.  Absolute offsets are not compared: the host's
allocator hands slots out from per-CPU clusters whose state earlier
programs left.  ``Labeller`` assigns labels identically on both sides.

``RES`` is the step's normalised outcome: ``{"ret": page | 0 | n | "outside"}``,
``{"errno": "EINVAL"}``, ``{"data": "51x8"}``, or
``{"signal": "SIGSEGV", "si_code": "SEGV_MAPERR", "at": byte_offset}``.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from typing import Any

from .program import PAGE_SIZE

SI_CODES = {
    "SIGSEGV": {1: "SEGV_MAPERR", 2: "SEGV_ACCERR", 3: "SEGV_BNDERR", 4: "SEGV_PKUERR"},
    "SIGBUS": {1: "BUS_ADRALN", 2: "BUS_ADRERR", 3: "BUS_OBJERR"},
}
SIGNALS = {7: "SIGBUS", 11: "SIGSEGV"}

PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE = 1 << 61
PM_EXCLUSIVE = 1 << 56
PM_PFN_MASK = (1 << 55) - 1


@dataclass(frozen=True)
class PageObs:
    """One pagemap entry, decoded."""

    present: bool = False
    swapped: bool = False
    file_shared: bool = False
    exclusive: bool = False
    pfn: int = 0
    swap: int = 0             # a swapped entry's frame bits: swap type and offset

    @classmethod
    def from_raw(cls, raw: int) -> PageObs:
        return cls(bool(raw & PM_PRESENT), bool(raw & PM_SWAP), bool(raw & PM_FILE),
                   bool(raw & PM_EXCLUSIVE), raw & PM_PFN_MASK if raw & PM_PRESENT else 0,
                   raw & PM_PFN_MASK if raw & PM_SWAP and not raw & PM_PRESENT else 0)


@dataclass
class ProcObs:
    """Raw observations of one process: maps text, window pagemap, smaps VMAs."""

    maps: str
    pages: list[PageObs]
    smaps: list[dict[str, int]]   # 'start', 'end' (absolute), 'Rss', 'Anonymous' (kB)


class Geometry:
    """Where the window lies on one side, and how to name its files."""

    def __init__(self, region_start: int, guard: int, region: int, file_paths: list[str]) -> None:
        self.region_start = region_start
        self.guard = guard
        self.region = region
        self.lo = region_start - guard * PAGE_SIZE
        self.hi = region_start + (region + guard) * PAGE_SIZE
        self.file_names = {p: f"file{k}" for k, p in enumerate(file_paths)}

    def rel_page(self, addr: int) -> int:
        return (addr - self.region_start) // PAGE_SIZE

    def rel(self, addr: int) -> str:
        off = addr - self.region_start
        return str(off // PAGE_SIZE) if off % PAGE_SIZE == 0 else f"{off // PAGE_SIZE}+{off % PAGE_SIZE:#x}"

    def inside(self, addr: int) -> bool:
        return self.lo <= addr < self.hi

    def maps(self, text: str) -> list[str]:
        """The /proc/PID/maps lines meeting the window, relative and with names normalised."""
        out = []
        for line in text.splitlines():
            fields = line.split(None, 5)
            if len(fields) < 5:
                continue
            start_s, end_s = fields[0].split("-")
            start, end = int(start_s, 16), int(end_s, 16)
            if end <= self.lo or start >= self.hi:
                continue
            perms, offset, dev, inode = fields[1], int(fields[2], 16), fields[3], fields[4]
            path = fields[5].strip() if len(fields) > 5 else ""
            if path in self.file_names:
                name = self.file_names[path]
            elif path.startswith("/dev/zero"):
                name = "shmem"
            elif not path and inode == "0" and dev in ("00:00", "0:0"):
                name = "anon"
            else:
                name = f"{path or '?'} {dev} {inode}"
            off = f"{offset // PAGE_SIZE}" if offset % PAGE_SIZE == 0 else f"{offset:#x}"
            out.append(f"{self.rel(start)}..{self.rel(end)} {perms} {off} {name}")
        return out

    def smaps(self, vmas: list[dict[str, int]]) -> list[str]:
        """One line per VMA; ``Swap=`` only when some of it is swapped out
        (so records taken without swap read as before)."""
        return [f"{self.rel(v['start'])}..{self.rel(v['end'])} Rss={v['Rss']} Anonymous={v['Anonymous']}"
                + (f" Swap={v['Swap']}" if v.get("Swap") else "")
                for v in vmas if v["end"] > self.lo and v["start"] < self.hi]


class Labeller:
    """Names frames consistently: see the module docstring.

    ``label(procs, zero_pfn, fresh)`` takes each live process's window pages
    (in process order) and returns their entry strings.  ``fresh`` is a set
    of (proc, window index) positions that the step just mapped anew (an
    mmap's range): a frame seen there that is mapped nowhere else is given
    a new name even if its PFN was seen before, because the host may
    recycle a frame the same step freed.
    """

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.counter = 0
        self.swap_names: dict[int, str] = {}     # swap slot (type, offset) -> "sN"
        self.swap_counter = 0

    def label(self, procs: dict[int, list[PageObs]], zero_pfn: int | None,
              fresh: set[tuple[int, int]] = frozenset()) -> dict[int, list[str]]:  # type: ignore[assignment]
        elsewhere: set[int] = set()
        for p, pages in procs.items():
            for i, pg in enumerate(pages):
                if pg.present and (p, i) not in fresh:
                    elsewhere.add(pg.pfn)
        names: dict[int, str] = {}
        swap_names: dict[int, str] = {}
        out: dict[int, list[str]] = {}
        for p in sorted(procs):
            row = []
            for i, pg in enumerate(procs[p]):
                if not (pg.present or pg.swapped):
                    row.append("")
                    continue
                flags = ("P" if pg.present else "") + ("S" if pg.swapped else "") + \
                    ("x" if pg.exclusive else "") + ("f" if pg.file_shared else "")
                if not pg.present:
                    name = swap_names.get(pg.swap)
                    if name is None:
                        name = self.swap_names.get(pg.swap)
                        if name is None:
                            name = f"s{self.swap_counter}"
                            self.swap_counter += 1
                        swap_names[pg.swap] = name
                    row.append(f"{flags}={name}")
                    continue
                if zero_pfn is not None and pg.pfn == zero_pfn:
                    row.append(flags + "=z")
                    continue
                name = names.get(pg.pfn)
                if name is None:
                    name = self.names.get(pg.pfn)
                    if name is None or ((p, i) in fresh and pg.pfn not in elsewhere):
                        name = f"a{self.counter}"
                        self.counter += 1
                    names[pg.pfn] = name
                row.append(f"{flags}={name}")
            out[p] = row
        self.names = names   # frames no longer mapped are forgotten
        self.swap_names = swap_names   # and slots no PTE holds
        return out


def snapshot(geo: Geometry, obs: dict[int, ProcObs], labeller: Labeller, zero_pfn: int | None,
             fresh: set[tuple[int, int]] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    pages = labeller.label({p: o.pages for p, o in obs.items()}, zero_pfn, fresh)
    return {str(p): {"maps": geo.maps(o.maps), "pages": pages[p], "smaps": geo.smaps(o.smaps)}
            for p, o in sorted(obs.items())}


def fresh_positions(geo: Geometry, step: dict[str, Any], result: dict[str, Any]) -> set[tuple[int, int]]:
    """Window positions an mmap step mapped anew (see Labeller)."""
    if step["op"] != "mmap" or not isinstance(result.get("ret"), int):
        return set()
    first = result["ret"] + geo.guard
    proc = step.get("proc", 0)
    return {(proc, i) for i in range(first, first + step["npages"])}


#: the counters a step's record carries in swap mode (``"counters"``: the
#: step's deltas): swap-outs and swap-ins submitted (/proc/vmstat pswpout,
#: pswpin) and the stepping process's major faults (maj_flt)
COUNTERS = ("pswpin", "pswpout", "majflt")


def counter_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What a step added to each of COUNTERS."""
    return {k: after[k] - before[k] for k in COUNTERS}


def errno_name(n: int) -> str:
    return _errno.errorcode.get(n, str(n))


def rle(data: bytes) -> str:
    """Run-length hex: b'QQQ\\0' -> '51x3,00'."""
    out = []
    i = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        out.append(f"{data[i]:02x}" + (f"x{j - i}" if j - i > 1 else ""))
        i = j
    return ",".join(out)


def parse_smaps(text: str, maps: str, lo: int = 0, hi: int = 1 << 64) -> list[dict[str, int]]:
    """Rss, Anonymous and Swap (kB) of the VMAs meeting [lo, hi).

    ``maps`` (the same process's /proc/PID/maps) says which VMAs those are;
    their blocks are found in the smaps text by their header, which is the
    maps line's address range -- much cheaper than parsing every block.
    """
    vmas: list[dict[str, int]] = []
    for line in maps.splitlines():
        head = line.split(" ", 1)[0]
        start_s, _, end_s = head.partition("-")
        start, end = int(start_s, 16), int(end_s, 16)
        if end <= lo or start >= hi:
            continue
        at = text.find(head + " ")
        if at < 0:
            raise ValueError(f"parse_smaps: no block for {head}")
        vma = {"start": start, "end": end}
        for key in ("Rss", "Anonymous", "Swap"):
            k = text.find(f"\n{key}:", at)
            vma[key] = int(text[k + len(key) + 2:text.find("kB", k)].strip())
        vmas.append(vma)
    return vmas


def normalise_result(geo: Geometry, step: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """A side's raw step outcome (absolute addresses, numbers) -> the comparable form."""
    if "errno" in raw:
        return {"errno": errno_name(raw["errno"])}
    if "sig" in raw:
        name = SIGNALS.get(raw["sig"], str(raw["sig"]))
        code = SI_CODES.get(name, {}).get(raw["code"], str(raw["code"]))
        return {"signal": name, "si_code": code, "at": geo.rel(raw["addr"])}
    if "data" in raw:
        return {"data": rle(bytes.fromhex(raw["data"]))}
    if "child" in raw:
        return {"ret": f"p{raw['child']}"}
    ret = raw["ret"]
    if step["op"] in ("mmap", "mremap"):
        if not geo.inside(ret):
            return {"ret": "outside"}
        return {"ret": geo.rel_page(ret) if (ret - geo.region_start) % PAGE_SIZE == 0 else geo.rel(ret)}
    return {"ret": ret}
