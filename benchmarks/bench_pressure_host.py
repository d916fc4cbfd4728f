"""The seed's case on this machine's kernel: an mmap writer beside a
thread that faults under memory pressure.

One thread writes one byte per page of an anonymous region (``--region-mib``,
``--passes`` times over it); the other maps and unmaps 16 pages in a loop
until the faulter is done, timing each pair (``pressure_host.c``).  The
process runs in a cgroup-v1 memory controller limited to a fraction of the
region, with a swap file, so the faults enter direct reclaim (memcg limit
reclaim) and swap; fraction >= 1 is the no-pressure baseline.

Reported per fraction (median of ``--rounds``): the writer's mmap+munmap
latency p50/p99, the store latency p50/p99 (most stores hit a present page;
p99 is the faults), and the /proc/vmstat deltas (pswpin, pswpout,
pgmajfault).  This host's kernel takes per-VMA locks for
anonymous faults, so its writer p99 is the counterpart of the simulator's
``pervma`` prediction (``specfault bench pressure``).

Needs root, gcc and /sys/fs/cgroup/memory (cgroup v1); creates a swap file
and a cgroup and removes both on exit (also on Ctrl-C).  Host swap is
system-wide: the run holds the host-swap lock of the oracle
(specfault.oracle.hostswap.swap_lock), so it waits for — and holds off —
the oracle's --swap mode and its swap tests.

    python benchmarks/bench_pressure_host.py [--region-mib 128] [--passes 2]
        [--fractions 2,1,0.75,0.5,0.25] [--rounds 3] [--json] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
from specfault.oracle.hostswap import swap_lock  # noqa: E402

CGROUP = Path("/sys/fs/cgroup/memory")
VMSTAT = ("pswpin", "pswpout", "pgmajfault")


def vmstat() -> dict[str, int]:
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        k, v = line.split()
        if k in VMSTAT:
            out[k] = int(v)
    return out


def _fractions(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not vals or any(not 0.05 <= v <= 16 for v in vals):
        raise argparse.ArgumentTypeError("each fraction must lie in [0.05, 16]")
    return vals


def _positive(most: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not 1 <= v <= most:
            raise argparse.ArgumentTypeError(f"must lie in [1, {most}]")
        return v
    return parse


class Setup:
    """The swap file and the cgroup, removed on exit whatever happens."""

    def __init__(self, workdir: Path, swap_mib: int) -> None:
        self.swap = workdir / "swapfile"
        self.cg = CGROUP / f"specfault-pressure-{os.getpid()}"
        self.swap_mib = swap_mib

    def __enter__(self) -> Setup:
        # host swap is system-wide: wait for any other user (the oracle's
        # --swap mode, its swap tests) to finish, and hold it off meanwhile
        self._lock = swap_lock()
        self._lock.__enter__()
        try:
            self._setup()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _setup(self) -> None:
        subprocess.run(["fallocate", "-l", f"{self.swap_mib}M", str(self.swap)], check=True)
        self.swap.chmod(0o600)
        subprocess.run(["mkswap", str(self.swap)], check=True, capture_output=True)
        subprocess.run(["swapon", str(self.swap)], check=True)
        self.cg.mkdir()

    def limit(self, nbytes: int) -> None:
        (self.cg / "memory.limit_in_bytes").write_text(str(nbytes))

    def __exit__(self, *exc: object) -> None:
        try:
            if self.cg.exists():
                self.cg.rmdir()
            subprocess.run(["swapoff", str(self.swap)], check=False, capture_output=True)
            self.swap.unlink(missing_ok=True)
        finally:
            self._lock.__exit__(None, None, None)


def run_once(binary: Path, cg: Path, pages: int, passes: int) -> dict[str, float]:
    before = vmstat()
    p = subprocess.run(
        ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$0" "$@"', str(binary),
         str(pages), str(passes), "10000000"],
        check=True, capture_output=True, text=True)
    after = vmstat()
    out: dict[str, float] = json.loads(p.stdout)
    for k in VMSTAT:
        out[k] = after.get(k, 0) - before.get(k, 0)
    return out


def host_rows(fractions: list[float], region_mib: int, passes: int,
              rounds: int) -> Iterator[dict[str, float]]:
    """Per memory fraction, the median of ``rounds`` runs (a row keyed
    ``fraction``), the swap file and cgroup set up once and removed after."""
    pages = region_mib * 256
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pressure_host"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(HERE / "pressure_host.c")],
                       check=True)
        with Setup(Path(tmp), 2 * region_mib + 64) as s:
            for f in fractions:
                s.limit(int(pages * 4096 * f))
                runs = [run_once(binary, s.cg, pages, passes) for _ in range(rounds)]
                yield {"fraction": f, **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--region-mib", type=_positive(4096), default=128)
    ap.add_argument("--passes", type=_positive(100), default=2)
    ap.add_argument("--fractions", type=_fractions, default=[2.0, 1.0, 0.75, 0.5, 0.25],
                    help="cgroup limit as a fraction of the region (>= 1: no pressure)")
    ap.add_argument("--rounds", type=_positive(100), default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", metavar="FILE.png")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_pressure_host: needs root (a swap file and a memory cgroup)", file=sys.stderr)
        return 2
    if not (CGROUP / "memory.limit_in_bytes").exists():
        print(f"bench_pressure_host: no cgroup-v1 memory controller at {CGROUP}", file=sys.stderr)
        return 2
    if shutil.which("gcc") is None:
        print("bench_pressure_host: needs gcc", file=sys.stderr)
        return 2
    rows = []
    try:
        for row in host_rows(a.fractions, a.region_mib, a.passes, a.rounds):
            rows.append(row)
            if not a.json:
                f = row["fraction"]
                print(f"limit {f:5.2f} x region: writer p50 {row['writer_p50_ns'] / 1e3:7.1f} us "
                      f"p99 {row['writer_p99_ns'] / 1e3:8.1f} us | store p99 "
                      f"{row['touch_p99_ns'] / 1e3:8.1f} us | pswpout {row['pswpout']:.0f} "
                      f"pgmajfault {row['pgmajfault']:.0f}", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        if a.json:
            print(json.dumps({"rows": rows, "interrupted": True}, indent=1))
        return 130
    if a.json:
        print(json.dumps({"region_mib": a.region_mib, "passes": a.passes, "rows": rows}, indent=1))
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["fraction"] for r in rows], [r["writer_p99_ns"] / 1e3 for r in rows], "o-", label="host (pervma)")
        ax.set_xlabel("memory limit / region")
        ax.set_ylabel("mmap+munmap p99 (us)")
        ax.invert_xaxis()
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
