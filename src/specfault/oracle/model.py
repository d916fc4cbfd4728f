"""Model runner: execute a program on the specfault model and record what it did.

It mirrors host.py step for step through the model's public API only
(``specfault.Machine``/``Process``), and builds the same normalised record
(record.py).  The model's window sits at ``MODEL_WINDOW`` (2 MiB aligned,
far below mmap_base), so the region lines up with the host's in PTE index
and a mapping that misses its hint lands above it, outside, on both sides.
A model exception other than the ones Linux semantics call for (OSError,
SegmentationFault, BusError) ends the record with an error naming the step.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from . import record as rec
from .program import FALLOC, MADV, MAP, MREMAP, PAGE_SIZE, Program, file_contents, prot_value
from .record import PM_PFN_MASK, Geometry, Labeller, PageObs, ProcObs, snapshot

MODEL_WINDOW = 0x7FF000000000
MODEL_FILE_DIR = "/oracle"


def default_machine(swap_pages: int = 0) -> Any:
    """The model machine a program runs on.  ``swap_pages`` (--swap): a
    swap device of that many pages (header included), as the host's swap
    file, written asynchronously as a swap file on a disk is (knob
    ``swap_writeback``: a folio written out stays in the swap cache)."""
    import specfault

    if swap_pages:
        return specfault.Machine(nr_frames=65536, swap_pages=swap_pages, swap_writeback="async")
    return specfault.Machine(nr_frames=65536)


def model_available() -> str | None:
    """None if the model's public API can run a process, else the reason it cannot."""
    try:
        import specfault

        m = specfault.Machine(nr_frames=1024)
        m.spawn()
    except Exception as exc:  # the model is under construction
        return f"{type(exc).__name__}: {exc}"
    return None


class _Run:
    def __init__(self, prog: Program, machine: Any) -> None:
        import specfault

        self.sf = specfault
        self.prog = prog
        self.m = machine
        self.paths = [f"{MODEL_FILE_DIR}/f{k}" for k in range(len(prog.files))]
        region_start = MODEL_WINDOW + prog.guard * PAGE_SIZE
        self.geo = Geometry(region_start, prog.guard, prog.region, self.paths)
        self.procs: dict[int, Any] = {}
        self.fds: dict[int, list[int]] = {}
        self.nprocs = 0
        self.labeller = Labeller()
        self.zero_pfn: int | None = None

    # ---- setup ----
    def setup(self) -> None:
        sf = self.sf
        for k, f in enumerate(self.prog.files):
            # the host's files are tmpfs files (/dev/shm): so are these
            self.m.create_file(self.paths[k], file_contents(k, f["size"]), tmpfs=True)
        # find the zero page's frame in a scratch process, as the host does
        scratch = self.m.spawn()
        a = scratch.mmap(0, PAGE_SIZE, sf.PROT_READ, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
        scratch.read(a, 1)
        self.zero_pfn = scratch.pagemap(a).pfn
        scratch.exit()
        p0 = self.m.spawn()
        geo = self.geo
        got = p0.mmap(geo.lo, geo.hi - geo.lo, sf.PROT_NONE,
                      sf.MAP_PRIVATE | sf.MAP_ANONYMOUS | sf.MAP_NORESERVE | sf.MAP_FIXED_NOREPLACE)
        if got != geo.lo:
            raise RuntimeError(f"model: window reservation landed at {got:#x}, not {geo.lo:#x}")
        p0.munmap(geo.region_start, self.prog.region * PAGE_SIZE)
        self.procs[0] = p0
        self.fds[0] = [p0.open(path, sf.O_RDWR) for path in self.paths]
        self.nprocs = 1

    def addr(self, page: int | None, misalign: int = 0) -> int:
        return 0 if page is None else self.geo.region_start + page * PAGE_SIZE + misalign

    # ---- steps ----
    def execute(self, s: dict[str, Any]) -> dict[str, Any]:
        p = s.get("proc", 0)
        proc = self.procs[p]
        op = s["op"]
        if op == "fork":
            child = proc.fork()
            k = self.nprocs
            self.nprocs += 1
            self.procs[k] = child
            self.fds[k] = list(self.fds[p])
            return {"child": k}
        if op == "exit":
            proc.exit()
            del self.procs[p]
            return {"ret": 0}
        try:
            return self._syscall(proc, p, s)
        except OSError as exc:
            return {"errno": exc.errno}
        except self.sf.SegmentationFault as exc:
            return {"sig": 11, "code": exc.si_code, "addr": exc.addr}
        except self.sf.BusError as exc:
            return {"sig": 7, "code": exc.si_code, "addr": exc.addr}

    def _syscall(self, proc: Any, p: int, s: dict[str, Any]) -> dict[str, Any]:
        op = s["op"]
        if op == "mmap":
            flags = sum(MAP[n] for n in set(s["flags"]))
            f = s.get("file")
            fd = self.fds[p][f] if f is not None else -1
            ret = proc.mmap(self.addr(s["page"]), s["npages"] * PAGE_SIZE, prot_value(s["prot"]), flags,
                            fd, s.get("offset", 0) * PAGE_SIZE)
            return self._contain(proc, ret, s["npages"])
        if op == "munmap":
            proc.munmap(self.addr(s["page"], s.get("misalign", 0)), s["npages"] * PAGE_SIZE)
            return {"ret": 0}
        if op == "mprotect":
            proc.mprotect(self.addr(s["page"], s.get("misalign", 0)), s["npages"] * PAGE_SIZE,
                          prot_value(s["prot"]))
            return {"ret": 0}
        if op == "madvise":
            proc.madvise(self.addr(s["page"]), s["npages"] * PAGE_SIZE, MADV[s["advice"]])
            return {"ret": 0}
        if op == "mremap":
            flags = sum(MREMAP[n] for n in set(s.get("flags", [])))
            new = self.addr(s["new_page"]) if s.get("new_page") is not None else 0
            ret = proc.mremap(self.addr(s["page"]), s["npages"] * PAGE_SIZE, s["new_npages"] * PAGE_SIZE,
                              flags, new)
            return self._contain(proc, ret, s["new_npages"])
        if op == "touch":
            addr = self.addr(s["page"], s.get("off", 0))
            if s["kind"] == "read":
                return {"data": bytes(proc.read(addr, s.get("len", 8))).hex()}
            if s["kind"] == "write":
                proc.write(addr, bytes([s.get("val", 0x50)]))
                return {"ret": 0}
            proc.access(addr, "exec")
            return {"ret": 0}
        if op == "pread":
            return {"data": bytes(proc.pread(self.fds[p][s["file"]], s["len"], s["off"])).hex()}
        if op == "pwrite":
            n = proc.pwrite(self.fds[p][s["file"]], bytes([s["val"]]) * s["len"], s["off"])
            return {"ret": s["len"] if n is None else n}
        if op == "ftruncate":
            proc.ftruncate(self.fds[p][s["file"]], s["size"])
            return {"ret": 0}
        if op == "fallocate":
            proc.fallocate(self.fds[p][s["file"]], sum(FALLOC[n] for n in set(s["mode"])),
                           s["off"], s["len"])
            return {"ret": 0}
        if op == "otrunc":
            proc.close(proc.open(self.paths[s["file"]], self.sf.O_RDWR | self.sf.O_TRUNC))
            return {"ret": 0}
        raise AssertionError(f"model runner: unknown op {op!r}")

    def _contain(self, proc: Any, ret: int, npages: int) -> dict[str, Any]:
        if not self.geo.inside(ret):
            proc.munmap(ret, npages * PAGE_SIZE)
        return {"ret": ret}

    # ---- observation ----
    def counters(self) -> dict[str, int]:
        """record.COUNTERS now: the machine runs only this program, so its
        pgmajfault is the stepping process's major faults."""
        v = self.m.vmstat()
        return {"pswpin": v.get("pswpin", 0), "pswpout": v.get("pswpout", 0),
                "majflt": v.get("pgmajfault", 0)}

    def observe(self, fresh: set[tuple[int, int]]) -> dict[str, Any]:
        obs = {}
        for k, proc in sorted(self.procs.items()):
            pages = []
            for i in range(self.prog.window_pages):
                e = proc.pagemap(self.geo.lo + i * PAGE_SIZE)
                pages.append(PageObs(bool(e.present), bool(e.swapped), bool(e.file_shared),
                                     bool(e.exclusive), int(e.pfn) if e.present else 0,
                                     int(e.raw) & PM_PFN_MASK if e.swapped and not e.present else 0))
            smaps = [{"start": int(v["start"]), "end": int(v["end"]), "Rss": int(v["Rss"]),
                      "Anonymous": int(v["Anonymous"]), "Swap": int(v.get("Swap", 0))}
                     for v in proc.smaps()]
            obs[k] = ProcObs(proc.maps(), pages, smaps)
        return snapshot(self.geo, obs, self.labeller, self.zero_pfn, fresh)


def run_model(prog: Program, machine_factory: Callable[[], Any] | None = None,
              swap_pages: int = 0) -> dict[str, Any]:
    """Run ``prog`` on a fresh model machine; return the normalised record.
    With ``swap_pages`` (--swap) the machine has swap and every step
    records its counters, as the host's does in swap mode."""
    record: dict[str, Any] = {"side": "model", "initial": None, "steps": [], "error": None}
    try:
        machine = machine_factory() if machine_factory else default_machine(swap_pages)
        run = _Run(prog, machine)
        run.setup()
        record["initial"] = run.observe(set())
    except Exception as exc:
        record["error"] = f"setup: model raised {type(exc).__name__}: {exc}\n{_tb()}"
        return record
    for i, step in enumerate(prog.steps):
        try:
            before = run.counters() if swap_pages else None
            raw = run.execute(step)
            result = rec.normalise_result(run.geo, step, raw)
            rec_step: dict[str, Any] = {"result": result}
            if before is not None:
                rec_step["counters"] = rec.counter_deltas(before, run.counters())
            rec_step["state"] = run.observe(rec.fresh_positions(run.geo, step, result))
        except Exception as exc:
            record["error"] = f"step {i}: model raised {type(exc).__name__}: {exc}\n{_tb()}"
            record["error_step"] = i
            return record
        record["steps"].append(rec_step)
    return record


def _tb() -> str:
    return "".join(traceback.format_exc(limit=-4))
