"""Cost of VMA-changing syscalls as the address space grows: mmap+munmap,
mprotect split+merge, and mmap+fault+munmap at 10, 100, 1,000 and 10,000
existing VMAs, through the public API.

    python benchmarks/bench_vma_ops.py [--sizes 10,100,1000,10000] [--rounds 7]
                                       [--ops 200] [--clock wall|cpu] [--json]

Each size gets its own process, laid out as ``n`` three-page VMAs packed
top-down below ``mmap_base`` whose protections alternate PROT_READ and
PROT_READ|PROT_WRITE, so no two neighbours merge.  Then, per round:

  mmap+munmap     ``ops`` times: mmap one anonymous page with no hint (the
                  top-down gap search places it below the lowest VMA) and
                  munmap it
  mprotect        ``ops`` times: mprotect the middle page of a VMA in the
                  middle of the address space to PROT_READ|PROT_EXEC (split
                  into three) and back (merge into one)
  mmap+fault      ``ops`` times: mmap one page, write to it (anonymous
                  write fault, anon_vma_prepare looks at the neighbours),
                  munmap it

The figure is the median over the rounds of µs per op (a pair counts as
one op); the sizes take turns within each round, so load from elsewhere
on the machine hits them alike.  The last column is the 10,000-vs-10
ratio (the largest size against the smallest).  ``--clock cpu`` times
with this process's CPU time (time.process_time) instead of the wall
clock: steadier when other work shares the cores.  No assertion: figures
only.  Run it against
another checkout with ``PYTHONPATH=/path/to/src``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import specfault as sf

PAGE = 4096
R, RW, RX = sf.PROT_READ, sf.PROT_READ | sf.PROT_WRITE, sf.PROT_READ | sf.PROT_EXEC
ANON = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS


def build(n: int) -> tuple[sf.Process, int, int]:
    """A process with ``n`` non-mergeable three-page VMAs; returns it, the
    start of the VMA in the middle and that VMA's protection."""
    m = sf.Machine(nr_frames=4096)
    p = m.spawn()
    starts = []
    for i in range(n):
        starts.append(p.mmap(0, 3 * PAGE, R if i % 2 else RW, ANON))
    assert len(p.maps().splitlines()) == n, "bench_vma_ops: neighbours merged"
    m.check()
    return p, starts[n // 2], R if (n // 2) % 2 else RW


def op_mmap_munmap(p: sf.Process, mid: int, prot: int) -> Callable[[], None]:
    mmap, munmap = p.mmap, p.munmap

    def op() -> None:
        a = mmap(0, PAGE, RX, ANON)
        munmap(a, PAGE)
    return op


def op_mprotect(p: sf.Process, mid: int, prot: int) -> Callable[[], None]:
    mprotect = p.mprotect

    def op() -> None:
        mprotect(mid + PAGE, PAGE, RX)        # split into three
        mprotect(mid + PAGE, PAGE, prot)      # merge back into one
    return op


def op_mmap_fault(p: sf.Process, mid: int, prot: int) -> Callable[[], None]:
    mmap, munmap, write = p.mmap, p.munmap, p.write

    def op() -> None:
        a = mmap(0, PAGE, RW | sf.PROT_EXEC, ANON)
        write(a, b"x")
        munmap(a, PAGE)
    return op


KINDS = {"mmap+munmap": op_mmap_munmap, "mprotect split+merge": op_mprotect,
         "mmap+fault+munmap": op_mmap_fault}


def measure(sizes: list[int], rounds: int, ops: int,
            clock: Callable[[], float]) -> dict[int, dict[str, float]]:
    """µs per op for each size and kind: the median over ``rounds``.  The
    sizes take turns within each round (all processes are built first), so
    load from other work on the machine hits every size alike."""
    built = {n: build(n) for n in sizes}
    maps_before = {n: p.maps() for n, (p, _, _) in built.items()}
    samples: dict[int, dict[str, list[float]]] = {n: {k: [] for k in KINDS} for n in sizes}
    for kind, make in KINDS.items():
        run = {n: make(*built[n]) for n in sizes}
        for op in run.values():
            for _ in range(max(1, ops // 10)):   # warm-up
                op()
        for _ in range(rounds):
            for n in sizes:
                op = run[n]
                t0 = clock()
                for _ in range(ops):
                    op()
                samples[n][kind].append((clock() - t0) / ops)
    for n, (p, _, _) in built.items():
        assert p.maps() == maps_before[n], f"bench_vma_ops: n={n}: the layout changed"
        p.machine.check()
    return {n: {k: statistics.median(v) * 1e6 for k, v in samples[n].items()} for n in sizes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,1000,10000",
                    help="comma-separated numbers of existing VMAs")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ops", type=int, default=200, help="ops per round")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(n < 2 for n in sizes):
        ap.error("--sizes: each size must be at least 2")
    if args.rounds < 1 or args.ops < 1:
        ap.error("--rounds and --ops must be at least 1")
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    us = measure(sizes, args.rounds, args.ops, clock)
    lo, hi = min(sizes), max(sizes)
    ratio = {k: us[hi][k] / us[lo][k] for k in KINDS}
    if args.json:
        print(json.dumps({"rounds": args.rounds, "ops": args.ops, "sizes": sizes,
                          "clock": args.clock,
                          "us_per_op": {k: {str(n): round(us[n][k], 2) for n in sizes}
                                        for k in KINDS},
                          "ratio": {k: round(v, 2) for k, v in ratio.items()},
                          "ratio_sizes": [hi, lo]}))
        return
    print(f"µs per op ({args.clock} clock), median of {args.rounds} rounds x {args.ops} ops "
          f"(n = existing VMAs; module {sf.__file__})")
    print(f"{'op':<22}" + "".join(f"{f'n={n:,}':>12}" for n in sizes) + f"{f'{hi}/{lo}':>10}")
    for k in KINDS:
        print(f"{k:<22}" + "".join(f"{us[n][k]:12.1f}" for n in sizes) + f"{ratio[k]:9.2f}x")


if __name__ == "__main__":
    main()
