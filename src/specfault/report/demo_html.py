"""The demo's HTML report: the whole tour on one page (``specfault demo``
writes it to ``OUT/report.html``).  Built from the ``--json`` summary (every
figure) and what the tour emitted as it ran (maps, frame rows, the
counterexample, the comparisons for the plots)."""

from __future__ import annotations

from typing import Any

from specfault.report.demo import PAGE_LEGEND
from specfault.report.html import Report, counterexample, fig

_STAT_KEYS = ("pgfault", "pgalloc", "pgfree", "zero_page_fault", "cow_fault", "fault_around",
              "nr_free_pages")


def _tour(r: Report, summary: dict[str, Any], story: list[tuple[str, Any]]) -> None:
    r.h2("1. The model, step by step")
    r.p("A small address space built, faulted, forked and copy-on-write split on the sequential "
        "model; after every step every invariant (check_mm) is checked.")
    k = 0
    legend = False
    for kind, payload in story:
        if kind == "step":
            r.h3(payload.strip())
        elif kind == "maps":
            r.pre(payload.rstrip("\n"))
        elif kind == "pages":
            who, labels = payload
            if not legend:
                legend = True
                r.p("Frame rows: one cell per page of the range, in order.", "note")
                r.legend(PAGE_LEGEND)
            r.table(["", *[f"page {i}" for i in range(len(labels))]], [[who, *labels]], text_cols=1)
        elif kind == "stats":
            base = f"tour/steps/{k}"
            r.table(["step", *_STAT_KEYS[:-1], "free frames"],
                    [[summary["tour"]["steps"][k]["step"],
                      *[fig(r.data, f"{base}/{key}", 1, 0) for key in _STAT_KEYS]]],
                    caption="vmstat counters after this step (totals since the machine booted)",
                    text_cols=1)
            k += 1
    r.table(["frames", "free at the end", "holding the file's page cache"],
            [[fig(r.data, "tour/frames", 1, 0), fig(r.data, "tour/frames_free_at_end", 1, 0),
              fig(r.data, "tour/page_cache_frames", 1, 0)]])


def _check(r: Report, summary: dict[str, Any]) -> None:
    r.h2("2. Checking the speculative protocol on the core races")
    r.p("Every execution is checked: invariants, use-after-free, lockdep, linearizability. "
        "Each race is explored exhaustively up to one preemption (dfs), then by 300 PCT schedules.")
    rows = []
    for i, row in enumerate(summary["check"]):
        rows.append([row["scenario"], ("OK", "ok") if row["ok"] else ("FAIL", "bad"),
                     fig(r.data, f"check/{i}/dfs_schedules", 1, 0),
                     "exhaustive" if row["dfs_exhausted"] else "budget",
                     fig(r.data, f"check/{i}/pct_schedules", 1, 0), fig(r.data, f"check/{i}/seconds", 1, 2)])
    r.table(["scenario", "verdict", "dfs schedules", "dfs scope", "pct schedules", "seconds"], rows,
            text_cols=2)


def _mutant(r: Report, summary: dict[str, Any], story: list[tuple[str, Any]]) -> None:
    m = summary["mutant"]
    r.h2("3. Taking one decision away: a mutant")
    r.p(f"Mutant {m['mutant']}: {m['breaks']}")
    if not m["killed"]:
        r.raw('<p class="bad">The mutant survived the portfolio.</p>')
        return
    r.table(["mutant", "killed by scenario", "strategy", "schedules (whole hunt)", "seconds"],
            [[m["mutant"], m["scenario"], m["strategy"], fig(r.data, "mutant/schedules", 1, 0),
              fig(r.data, "mutant/seconds", 1, 1)]], text_cols=3,
            caption="schedules: every schedule the portfolio ran, over all its strategies, until the kill")
    for kind, payload in story:
        if kind == "kill" and payload[2] is not None:
            counterexample(r, payload[2], payload[3], "The counterexample (minimised)")


def _sim(r: Report, summary: dict[str, Any], story: list[tuple[str, Any]]) -> None:
    from specfault.sim import plots
    from specfault.sim.bench import ELAPSED

    r.h2("4. What each protocol buys: the simulator")
    r.p("The same model code on a simulated many-CPU machine, under the four fault protocols "
        "(classic mmap_lock, speculative, per-VMA locks, Dufour's SPF).")
    cmps = [payload[0] for kind, payload in story if kind == "sim"]
    for i, entry in enumerate(summary["sim"]):
        wl = entry["workload"]
        elapsed = wl in ELAPSED
        r.h3(wl)
        rows = []
        for j, run in enumerate(entry["runs"]):
            p = f"sim/{i}/runs/{j}"
            rows.append([fig(r.data, f"{p}/cpus", 1, 0), run["protocol"],
                         fig(r.data, f"{p}/wall_ms", 1, 3) if elapsed else fig(r.data, f"{p}/faults_per_s", 1e-6, 2),
                         fig(r.data, f"{p}/ratio_vs_classic", 1, 2, "x"),
                         fig(r.data, f"{p}/fault_p99_us", 1, 1), fig(r.data, f"{p}/writer_p99_us", 1, 1),
                         fig(r.data, f"{p}/lock_wait_p99_us", 1, 1), fig(r.data, f"{p}/abort_rate", 100, 2, "%")])
        r.table(["CPUs", "protocol", "elapsed ms" if elapsed else "M faults/s", "vs classic", "fault p99 µs",
                 "mmap writer p99 µs", "mmap_lock wait p99 µs", "aborts"], rows, text_cols=0)
        if i < len(cmps):
            for svg, caption in plots.svgs(cmps[i]):
                r.plot(svg, caption)
            cpus = ",".join(str(c) for c in sorted({x.cpus for x in cmps[i].runs}))
            r.command(f"specfault bench -w {wl} --cpus {cpus} --faults {cmps[i].params.get('faults', '')} "
                      f"--protocols classic,speculative,pervma,dufour --trace {wl}.json --html {wl}.html",
                      "the same comparison with its Perfetto trace and its own report")


def demo_report(summary: dict[str, Any], story: list[tuple[str, Any]]) -> Report:
    """The report of one ``specfault demo`` run (``summary`` is its --json)."""
    r = Report("specfault: the guided tour", summary,
               "An executable, checkable model of the Linux page-fault path; every figure here was "
               "computed as the tour ran.")
    r.command("specfault demo", "reproduce this page")
    if "tour" in summary:
        _tour(r, summary, [x for x in story if x[0] in ("step", "maps", "pages", "stats")])
    if "check" in summary:
        _check(r, summary)
    if "mutant" in summary:
        _mutant(r, summary, story)
    if "sim" in summary:
        _sim(r, summary, story)
    return r
