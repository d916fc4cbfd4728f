"""What share of the speculative protocol's gain do per-VMA locks get?

Suren Baghdasaryan's per-VMA lock cover letters (RFC, Aug 2022; v1/v4,
2023) say only "performance benchmarks show similar although slightly
smaller benefits as with SPF patchset (~75% of SPF benefits)", without
naming the benchmarks.  So the share is measured here on every workload
of the simulator where SPF gains anything, with one cost profile and each
workload's own defaults, and the median is reported beside the published
figure.  For each (workload, CPUs):

    share = (pervma - classic) / (spf - classic)

on the workload's figure of merit (faults/s, or 1/elapsed for fixed jobs);
rows where SPF gains less than ``--min-gain`` are listed but not counted
(a share of a vanishing gain is noise).  ``--spf`` picks which speculative
protocol is "SPF" (Lespinasse's ``speculative``, or ``dufour``).

    python benchmarks/per_vma_share.py [--spf speculative] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from specfault.sim import compare

#: (workload, CPU counts, parameters): every workload where SPF can gain
CASES: list[tuple[str, tuple[int, ...], dict[str, object]]] = [
    ("pft", (8, 32, 48), {"faults": 48_000}),
    ("pft", (8, 32, 48), {"faults": 48_000, "vma_per_thread": True}),
    ("page_fault1", (8, 32), {"faults": 32_000}),
    ("ebizzy", (16, 32), {"faults": 16_000}),
    ("spf_test", (8,), {}),
    ("app_launch", (8,), {}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spf", default="speculative", help="the SPF protocol to compare with")
    ap.add_argument("--min-gain", type=float, default=0.05,
                    help="count a row only if SPF gains at least this much (0.05 = 5%%)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    for workload, cpus, params in CASES:
        cmp = compare(workload, cpus=cpus, protocols=("classic", a.spf, "pervma"), **params)
        shape = ",".join(f"{k}={v}" for k, v in params.items() if k != "faults") or "-"
        for n in cpus:
            spf = cmp.ratio(a.spf, n) or 0.0
            pv = cmp.ratio("pervma", n) or 0.0
            share = (pv - 1.0) / (spf - 1.0) if spf - 1.0 >= a.min_gain else None
            rows.append({"workload": workload, "shape": shape, "cpus": n,
                         "spf_vs_classic": spf, "pervma_vs_classic": pv, "share": share})
    counted = [r["share"] for r in rows if r["share"] is not None]
    median = statistics.median(counted) if counted else None
    if a.json:
        print(json.dumps({"spf": a.spf, "rows": rows, "median_share": median}, indent=2))
        return
    print(f"{'workload':12s} {'shape':22s} {'CPUs':>4s} {a.spf + '/cl':>16s} {'pervma/cl':>10s} "
          f"{'share':>7s}")
    for r in rows:
        sh = f"{r['share'] * 100:6.0f}%" if r["share"] is not None else "     - "
        print(f"{r['workload']:12s} {r['shape']:22s} {r['cpus']:4d} {r['spf_vs_classic']:15.2f}x "
              f"{r['pervma_vs_classic']:9.2f}x {sh}")
    if median is not None:
        print(f"median share over {len(counted)} rows where {a.spf} gains >= "
              f"{a.min_gain * 100:.0f}%: {median * 100:.0f}%  (published: ~75%)")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
