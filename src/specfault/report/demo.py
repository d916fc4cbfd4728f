"""The guided tour: a small address space built, faulted, forked and
COW-split on the sequential model, with maps and counters at each step.

Everything printed is computed by the model as it runs; nothing is canned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import specfault as sf

RW = sf.PROT_READ | sf.PROT_WRITE
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS


#: what a cell of the demo's frame rows means (the labels of _pfn_label)
PAGE_LEGEND = (
    ("-", "not present: no page mapped yet"),
    ("zero", "the shared zero page (a read fault of untouched anonymous memory)"),
    ("P3", "physical page number 3 of this tour, numbered in order of first appearance "
           "(a name per page, not its PFN: freed PFNs are reused)"),
    ("x", "suffix: mapped exactly once, exclusive (pagemap bit 56): a write needs no copy"),
    ("s", "suffix: shared, mapped by more than one process (after fork, copy-on-write)"),
)


def _pfn_label(m: Any, entry: Any, names: dict[int, str]) -> str:
    """A short stable name per physical page (not per PFN: PFNs get reused),
    suffixed x (mapped once: exclusive) or s (shared); see PAGE_LEGEND."""
    if not entry.present:
        return "-"
    if entry.pfn == m.kernel.mem.zero_page.pfn:
        return "zero"
    key = id(m.kernel.mem.pages[entry.pfn])
    if key not in names:
        names[key] = f"P{len(names) + 1}"
    flag = "x" if entry.exclusive else "s"
    return f"{names[key]}{flag}"


def run_demo(emit: Callable[[str, Any], None]) -> dict[str, Any]:
    """Run the tour; ``emit(kind, payload)`` receives each step
    ("step", title), ("maps", text), ("pages", rows), ("stats", dict).
    Returns a summary for --json."""
    m = sf.Machine(nr_frames=4096)
    names: dict[int, str] = {}
    summary: dict[str, Any] = {"steps": []}

    def stats(label: str) -> None:
        v = m.vmstat()
        row = {k: v[k] for k in ("pgfault", "pgalloc", "pgfree", "zero_page_fault",
                                 "cow_fault", "fault_around", "nr_free_pages")}
        m.check()                           # every invariant, after every step
        emit("stats", row)
        summary["steps"].append({"step": label, **row})

    def pages(proc: Any, base: int, n: int, who: str) -> None:
        emit("pages", (who, [_pfn_label(m, proc.pagemap(base + i * 4096), names)
                             for i in range(n)]))

    p = m.spawn("parent")
    emit("step", "1. mmap 8 anonymous pages (nothing is allocated yet)")
    a = p.mmap(0, 8 * 4096, RW, ANON)
    emit("maps", p.maps())
    pages(p, a, 8, "parent")
    stats("mmap")

    emit("step", "2. read pages 0-3: each maps the shared zero page")
    for i in range(4):
        p.access(a + i * 4096, "read")
    pages(p, a, 8, "parent")
    stats("read")

    emit("step", "3. write pages 0-5: zero-page COW for 0-3, fresh pages for 4-5")
    for i in range(6):
        p.write(a + i * 4096, f"page {i}".encode())
    pages(p, a, 8, "parent")
    stats("write")

    emit("step", "4. mprotect pages 2-3 read-only: the VMA splits in three")
    p.mprotect(a + 2 * 4096, 2 * 4096, sf.PROT_READ)
    emit("maps", p.maps())
    stats("mprotect")

    emit("step", "5. mprotect them back: the three VMAs merge again")
    p.mprotect(a + 2 * 4096, 2 * 4096, RW)
    emit("maps", p.maps())
    stats("mprotect back")

    emit("step", "6. fork: the child shares every page copy-on-write (s = shared)")
    c = p.fork()
    pages(p, a, 8, "parent")
    pages(c, a, 8, "child")
    stats("fork")

    emit("step", "7. child writes page 0, parent writes page 1: each gets a private copy")
    c.write(a, b"child!")
    p.write(a + 4096, b"parent")
    pages(p, a, 8, "parent")
    pages(c, a, 8, "child")
    emit("step", f"   parent reads {p.read(a, 6)!r}, child reads {c.read(a, 6)!r}")
    stats("cow")

    emit("step", "8. child exits: its pages are freed, parent's page 0 is exclusive again")
    c.exit()
    p.write(a, b"reused")          # do_wp_page reuses the now-exclusive page: no copy
    pages(p, a, 8, "parent")
    stats("exit")

    emit("step", "9. a private file mapping: one read fault maps 16 cached pages (fault-around)")
    m.create_file("/data", bytes(range(256)) * 16 * 20)   # 20 pages
    fd = p.open("/data", sf.O_RDONLY)
    f = p.mmap(0, 20 * 4096, sf.PROT_READ, sf.MAP_PRIVATE, fd, 0)
    p.read(f + 4096, 1)
    emit("maps", p.maps())
    pages(p, f, 20, "parent")
    stats("fault-around")

    emit("step", "10. exit: every frame returns to the allocator")
    p.exit()
    stats("exit all")
    summary["frames_free_at_end"] = m.vmstat()["nr_free_pages"]
    summary["page_cache_frames"] = m.vmstat()["nr_file_pages"]
    summary["frames"] = m.config.nr_frames
    return summary
