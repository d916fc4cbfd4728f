"""Random programs biased toward the cases where memory managers go wrong.

One generator, two sources of randomness: ``random.Random`` for the CLI
(``--seed`` reproduces a run exactly) and Hypothesis (``programs()``) for
property tests, which also gives Hypothesis's own shrinking.  Both go
through ``Chooser``.

Bias (each a hard case from issue 3):
  * new mappings placed right next to existing ones, often with the same
    protection and kind, so they may merge (or must not: different file
    offsets, shared vs private, anon_vma differences after fork);
  * munmap / mprotect ranges that start or end inside a mapping (splits),
    and ranges that run across holes (mprotect ENOMEM after partial work);
  * mremap moves onto existing mappings (MREMAP_FIXED), grow in place into
    a neighbour, shrink, DONTUNMAP;
  * fork, then writes on both sides of the same pages (COW and reuse);
  * read-then-write on anonymous memory (zero page, then a real page);
  * reads of file mappings (fault-around), offsets beyond EOF (SIGBUS);
  * MAP_FIXED_NOREPLACE collisions, hints that do not fit;
  * truncation of mapped files (shrink, to zero, grow back, partial last
    page, O_TRUNC) and hole punching (fallocate, MADV_REMOVE), then
    touches beyond the new end (SIGBUS) and of private COWed copies.
The generator keeps a rough shadow of what it mapped to aim at boundaries;
the shadow need not be exact (the kernel decides what really happens).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from .program import ALPHABET, PAGE_SIZE, Program

T = TypeVar("T")


class Chooser(Protocol):
    def int(self, lo: int, hi: int) -> int: ...          # inclusive
    def choice(self, seq: Sequence[T]) -> T: ...
    def weighted(self, options: Sequence[tuple[float, T]]) -> T: ...
    def chance(self, p: float) -> bool: ...


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.rng.randrange(len(seq))]

    def weighted(self, options: Sequence[tuple[float, T]]) -> T:
        return self.rng.choices([o for _, o in options], weights=[w for w, _ in options])[0]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


class HypothesisChooser:
    """Draws through a Hypothesis ``data`` object (st.data()) so that shrinking works."""

    def __init__(self, draw: Any) -> None:
        from hypothesis import strategies as st

        self.st = st
        self.draw = draw

    def int(self, lo: int, hi: int) -> int:
        return int(self.draw(self.st.integers(lo, hi)))

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.int(0, len(seq) - 1)]

    def weighted(self, options: Sequence[tuple[float, T]]) -> T:
        # Hypothesis shrinks toward index 0: put the simplest option first.
        total = sum(w for w, _ in options)
        x = self.int(0, 999) * total / 1000
        for w, o in options:
            if x < w:
                return o
            x -= w
        return options[-1][1]

    def chance(self, p: float) -> bool:
        return self.int(0, 999) < p * 1000


RW = ["PROT_READ", "PROT_WRITE"]
PROTS: list[tuple[float, list[str]]] = [
    (6, RW), (2, ["PROT_READ"]), (1, ["PROT_NONE"]), (1, ["PROT_READ", "PROT_EXEC"]),
    (1, ["PROT_READ", "PROT_WRITE", "PROT_EXEC"]), (0.3, ["PROT_WRITE"]), (0.3, ["PROT_EXEC"]),
]


class _Shadow:
    """What the generator believes one process has mapped: (start, end, kind, prot)."""

    def __init__(self) -> None:
        self.maps: list[tuple[int, int, str, tuple[str, ...]]] = []

    def copy(self) -> _Shadow:
        s = _Shadow()
        s.maps = list(self.maps)
        return s

    def add(self, start: int, end: int, kind: str, prot: list[str]) -> None:
        self.remove(start, end)
        if end > start:
            self.maps.append((start, end, kind, tuple(prot)))

    def remove(self, start: int, end: int) -> None:
        out = []
        for s, e, k, p in self.maps:
            if e <= start or s >= end:
                out.append((s, e, k, p))
                continue
            if s < start:
                out.append((s, start, k, p))
            if e > end:
                out.append((end, e, k, p))
        self.maps = out

    def mapped_pages(self) -> list[int]:
        return [x for s, e, _, _ in self.maps for x in range(s, e)]


class Generator:
    """Builds one program from a Chooser."""

    def __init__(self, c: Chooser, max_steps: int = 30, region: int = 64, guard: int = 4,
                 swap: bool = False) -> None:
        self.c = c
        self.swap = swap          # --swap: more MADV_PAGEOUT (it now swaps), see gen_madvise
        self.max_steps = max_steps
        self.region = region
        self.guard = guard
        self.steps: list[dict[str, Any]] = []
        self.alive: list[int] = [0]
        self.nprocs = 1
        self.shadow: dict[int, _Shadow] = {0: _Shadow()}
        self.recent_touch: dict[int, int] = {}
        self.files: list[dict[str, int]] = []

    def program(self) -> Program:
        c = self.c
        nfiles = c.weighted([(3, 1), (1, 2)])
        for _ in range(nfiles):
            pages = c.int(2, 20)
            size = pages * PAGE_SIZE - (c.int(1, PAGE_SIZE - 1) if c.chance(0.2) else 0)
            self.files.append({"size": size})
        n = c.int(max(1, self.max_steps // 2), self.max_steps) if c.chance(0.7) else c.int(1, self.max_steps)
        while len(self.steps) < n:
            self.one_step()
        return Program(steps=self.steps[:n], region=self.region, guard=self.guard, files=self.files)

    # ---- address choices ----
    def page(self, proc: int) -> int:
        """A page, usually on or next to a boundary of something mapped."""
        c = self.c
        maps = self.shadow[proc].maps
        if maps and c.chance(0.75):
            s, e, _, _ = c.choice(maps)
            return max(-1, min(self.region, c.choice([s, e, s - 1, e - 1, s + 1, (s + e) // 2, e + 1])))
        return c.int(0, self.region - 1)

    def npages(self) -> int:
        return self.c.weighted([(4, 1), (4, 2), (3, 3), (2, 4), (2, self.c.int(5, 12)), (0.3, 0)])

    def proc(self) -> int:
        if len(self.alive) == 1 or self.c.chance(0.4):
            return self.alive[-1]
        return self.c.choice(self.alive)

    def val(self) -> int:
        return self.c.choice(list(ALPHABET))

    # ---- steps ----
    def one_step(self) -> None:
        c = self.c
        p = self.proc()
        options: list[tuple[float, str]] = [
            (16, "mmap"), (22, "touch"), (6, "munmap"), (7, "mprotect"), (6, "mremap"),
            (7, "madvise"), (2, "pread"), (2, "pwrite"), (2.5, "ftruncate"), (1.5, "fallocate"),
            (0.5, "otrunc"),
        ]
        if self.nprocs < 4:
            options.append((4, "fork"))
        if p != 0:
            options.append((1.5, "exit"))
        if not self.shadow[p].maps and c.chance(0.8):
            options = [(1, "mmap")]
        op = c.weighted(options)
        getattr(self, f"gen_{op}")(p)

    def emit(self, step: dict[str, Any]) -> None:
        self.steps.append(step)

    def gen_mmap(self, p: int) -> None:
        c = self.c
        n = self.npages()
        n = max(n, 1) if c.chance(0.95) else n
        maps = self.shadow[p].maps
        kind = c.weighted([(5, "anon"), (2, "file-private"), (2, "file-shared"), (1, "anon-shared")])
        prot = c.weighted(PROTS)
        if maps and c.chance(0.6):
            s, e, k, pr = c.choice(maps)
            start = c.choice([e, s - n, e, s - n, s, e - 1])   # adjacent (merge) or overlapping
            if c.chance(0.6):
                kind, prot = k, list(pr)                      # same kind & prot: a merge candidate
        else:
            start = c.int(0, max(0, self.region - n))
        start = max(0, min(start, self.region - max(n, 1)))
        placement = c.weighted([(6, "MAP_FIXED"), (2, "MAP_FIXED_NOREPLACE"), (2, "hint"), (0.3, "null")])
        flags = ["MAP_SHARED" if kind.endswith("shared") else "MAP_PRIVATE"]
        if kind.startswith("anon"):
            flags.append("MAP_ANONYMOUS")
        if placement in ("MAP_FIXED", "MAP_FIXED_NOREPLACE"):
            flags.append(placement)
        if c.chance(0.1):
            flags.append("MAP_POPULATE")
        if c.chance(0.05):
            flags.append("MAP_NORESERVE")
        step: dict[str, Any] = {"op": "mmap", "proc": p, "page": None if placement == "null" else start,
                                "npages": n, "prot": prot, "flags": flags}
        if kind.startswith("file"):
            f = c.int(0, len(self.files) - 1)
            fpages = (self.files[f]["size"] + PAGE_SIZE - 1) // PAGE_SIZE
            step["file"] = f
            if maps and c.chance(0.3) and start in (e for _, e, _, _ in maps):
                # continue the neighbour's file offset, so a merge is possible
                step["offset"] = c.int(0, max(0, fpages - 1))
            else:
                step["offset"] = c.weighted([(5, c.int(0, max(0, fpages - 1))), (1, c.int(0, fpages + 4))])
        self.emit(step)
        if placement != "null":
            self.shadow[p].add(start, start + n, kind, prot)

    def gen_touch(self, p: int) -> None:
        c = self.c
        pages = self.shadow[p].mapped_pages()
        if p in self.recent_touch and c.chance(0.35):
            page = self.recent_touch[p]            # read-then-write, write-after-fork
        elif pages and c.chance(0.85):
            page = c.choice(pages)
        else:
            page = self.page(p)
        kind = c.weighted([(5, "read"), (5, "write"), (1, "exec")])
        step: dict[str, Any] = {"op": "touch", "proc": p, "page": page, "kind": kind}
        if c.chance(0.3):
            step["off"] = c.choice([1, 8, 100] if kind == "exec" else [1, 8, 100, PAGE_SIZE - 8])
        if kind == "write":
            step["val"] = self.val()
        self.emit(step)
        self.recent_touch[p] = page

    def gen_munmap(self, p: int) -> None:
        step: dict[str, Any] = {"op": "munmap", "proc": p, "page": self.page(p), "npages": self.npages()}
        if self.c.chance(0.04):
            step["misalign"] = self.c.choice([1, 2048])
        self.emit(step)
        if "misalign" not in step:
            self.shadow[p].remove(step["page"], step["page"] + step["npages"])

    def gen_mprotect(self, p: int) -> None:
        c = self.c
        page = self.page(p)
        n = self.npages() if c.chance(0.7) else c.int(4, 20)     # long ranges cross holes
        step: dict[str, Any] = {"op": "mprotect", "proc": p, "page": page, "npages": n,
                                "prot": c.weighted(PROTS)}
        if c.chance(0.03):
            step["misalign"] = 1
        self.emit(step)

    def gen_madvise(self, p: int) -> None:
        c = self.c
        advice = c.weighted([
            (5, "MADV_DONTNEED"), (2, "MADV_WILLNEED"), (2, "MADV_DONTFORK"), (1, "MADV_DOFORK"),
            # wipe-on-fork meets the fork steps; PAGEOUT and REMOVE unmap
            # (and FREE + PAGEOUT discard); POPULATE faults in
            (2, "MADV_WIPEONFORK"), (1, "MADV_KEEPONFORK"), (2, "MADV_PAGEOUT"),
            (1.5, "MADV_REMOVE"), (1.5, "MADV_FREE"), (1.5, "MADV_POPULATE_READ"),
            (1.5, "MADV_POPULATE_WRITE"), (0.5, "MADV_DONTNEED_LOCKED"), (0.5, "MADV_COLD"),
            # flags only: visible as VMA splits and merges
            (1, "MADV_HUGEPAGE"), (0.5, "MADV_NOHUGEPAGE"), (0.5, "MADV_MERGEABLE"),
            (0.3, "MADV_UNMERGEABLE"), (0.5, "MADV_RANDOM"), (0.5, "MADV_SEQUENTIAL"),
            (0.3, "MADV_NORMAL"), (0.3, "MADV_DONTDUMP"), (0.3, "MADV_DODUMP"),
            (0.2, "MADV_COLLAPSE")])
        if self.swap and c.chance(0.5):
            advice = "MADV_PAGEOUT"        # with swap on, pageout swaps: make it common
        self.emit({"op": "madvise", "proc": p, "page": self.page(p), "npages": self.npages(),
                   "advice": advice})

    def gen_mremap(self, p: int) -> None:
        c = self.c
        maps = self.shadow[p].maps
        if maps and c.chance(0.85):
            s, e, _, _ = c.choice(maps)
            page = c.choice([s, s, s + 1])
            n = max(1, min(e - page, c.int(1, e - s)))
        else:
            page, n = self.page(p), self.npages()
        mode = c.weighted([(3, "shrink-grow"), (3, "maymove"), (4, "fixed"), (1, "dontunmap"),
                           (0.3, "bad")])
        new_n = c.choice([n + 1, n + 2, max(1, n - 1), n, n + 4])
        step: dict[str, Any] = {"op": "mremap", "proc": p, "page": page, "npages": n, "new_npages": new_n}
        if mode == "maymove":
            step["flags"] = ["MREMAP_MAYMOVE"]
        elif mode == "fixed":
            step["flags"] = ["MREMAP_MAYMOVE", "MREMAP_FIXED"]
            if maps and c.chance(0.6):
                s2, e2, _, _ = c.choice(maps)             # onto (part of) an existing mapping
                step["new_page"] = max(0, min(self.region - new_n, c.choice([s2, e2 - 1, e2, s2 - new_n])))
            else:
                step["new_page"] = c.int(0, max(0, self.region - new_n))
        elif mode == "dontunmap":
            step["new_npages"] = n
            step["flags"] = ["MREMAP_MAYMOVE", "MREMAP_DONTUNMAP"]
            if c.chance(0.5):
                step["flags"].append("MREMAP_FIXED")
                step["new_page"] = c.int(0, max(0, self.region - n))
        elif mode == "bad":
            step["flags"] = c.choice([["MREMAP_FIXED"], ["MREMAP_DONTUNMAP"]])
            step["new_page"] = c.int(0, max(0, self.region - new_n))
        self.emit(step)
        if "new_page" in step and "MREMAP_MAYMOVE" in step.get("flags", []):
            kept = [m for m in maps if m[0] <= page < m[1]]
            if "MREMAP_DONTUNMAP" not in step["flags"]:
                self.shadow[p].remove(page, page + n)
            if kept:
                self.shadow[p].add(step["new_page"], step["new_page"] + new_n, kept[0][2], list(kept[0][3]))

    def gen_pread(self, p: int) -> None:
        c = self.c
        f = c.int(0, len(self.files) - 1)
        off = c.int(0, self.files[f]["size"] + PAGE_SIZE) // 8 * 8
        self.emit({"op": "pread", "proc": p, "file": f, "off": off, "len": c.choice([8, 16, 64])})

    def gen_pwrite(self, p: int) -> None:
        c = self.c
        f = c.int(0, len(self.files) - 1)
        off = c.int(0, max(0, self.files[f]["size"] - 8)) // 8 * 8
        self.emit({"op": "pwrite", "proc": p, "file": f, "off": off, "len": c.choice([1, 8, 64]),
                   "val": self.val()})

    def gen_ftruncate(self, p: int) -> None:
        c = self.c
        f = c.int(0, len(self.files) - 1)
        pages = (self.files[f]["size"] + PAGE_SIZE - 1) // PAGE_SIZE
        size = c.weighted([
            (1.5, 0),                                                   # to zero
            (3, c.int(0, max(0, pages - 1)) * PAGE_SIZE),               # shrink, page-aligned
            (2, c.int(0, max(0, pages - 1)) * PAGE_SIZE + c.choice([1, 100, 2048, PAGE_SIZE - 1])),
            (2, (pages + c.int(0, 4)) * PAGE_SIZE),                     # grow back / beyond
            (1, self.files[f]["size"]),                                 # same size: zeroes the tail
        ])
        self.emit({"op": "ftruncate", "proc": p, "file": f, "size": size})

    def gen_fallocate(self, p: int) -> None:
        c = self.c
        f = c.int(0, len(self.files) - 1)
        pages = (self.files[f]["size"] + PAGE_SIZE - 1) // PAGE_SIZE
        off = c.int(0, max(0, pages)) * PAGE_SIZE
        n = c.int(1, 4) * PAGE_SIZE
        if c.chance(0.25):                                              # partial pages at the edges
            off += c.choice([1, 100, 2048])
            n += c.choice([-1, 0, 100])
        mode = c.weighted([
            (8, ["FALLOC_FL_PUNCH_HOLE", "FALLOC_FL_KEEP_SIZE"]),
            (0.7, ["FALLOC_FL_PUNCH_HOLE"]),                            # EOPNOTSUPP: no KEEP_SIZE
            (0.7, []), (0.5, ["FALLOC_FL_KEEP_SIZE"]),                  # allocate
            (0.5, ["FALLOC_FL_ZERO_RANGE"]), (0.3, ["FALLOC_FL_COLLAPSE_RANGE"]),
        ])
        if c.chance(0.03):
            n = 0                                                       # EINVAL
        self.emit({"op": "fallocate", "proc": p, "file": f, "off": off, "len": max(0, n), "mode": mode})

    def gen_otrunc(self, p: int) -> None:
        self.emit({"op": "otrunc", "proc": p, "file": self.c.int(0, len(self.files) - 1)})

    def gen_fork(self, p: int) -> None:
        self.emit({"op": "fork", "proc": p})
        child = self.nprocs
        self.nprocs += 1
        self.alive.append(child)
        self.shadow[child] = self.shadow[p].copy()
        if p in self.recent_touch:
            self.recent_touch[child] = self.recent_touch[p]

    def gen_exit(self, p: int) -> None:
        self.emit({"op": "exit", "proc": p})
        self.alive.remove(p)


def random_program(rng: random.Random, max_steps: int = 30, region: int = 64, guard: int = 4,
                   swap: bool = False) -> Program:
    return Generator(RandomChooser(rng), max_steps, region, guard, swap).program()


def programs(max_steps: int = 30, region: int = 64, guard: int = 4) -> Any:
    """A Hypothesis strategy of programs (same bias as the CLI's generator)."""
    from hypothesis import strategies as st

    @st.composite
    def _programs(draw: Any) -> Program:
        return Generator(HypothesisChooser(draw), max_steps, region, guard).program()

    return _programs()
