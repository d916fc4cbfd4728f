"""``specfault bench`` and ``specfault calibrate``.

    specfault bench --workload pft --cpus 1,2,4,8,16,32,48,64 \\
        --protocols classic,speculative,pervma[,dufour] [--faults N] [--seed S] \\
        [--profile FILE] [--json] [--plot FILE] [--param key=value ...]
    specfault calibrate [--out FILE]

Exit codes: 0 success, 2 bad input (unknown workload/protocol, bad CPU
list, unreadable profile, a parameter the workload does not take).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from typing import Any

from specfault.config import knob_info
from specfault.report.outputs import html_file, trace_file
from specfault.sim.bench import DEFAULT_PROTOCOLS, ELAPSED, PROTOCOLS, Comparison, compare
from specfault.sim.cost import CostProfile
from specfault.sim.workloads import WORKLOADS


def register(sub: Any) -> None:
    b = sub.add_parser("bench", help="simulate the fault protocols side by side",
                       description="Run a workload under each protocol at each CPU count "
                                   "on the simulated machine; print figures and ratios vs classic.")
    b.add_argument("--workload", "-w", default="pft",
                   help=f"one of: {', '.join(WORKLOADS)} (default pft)")
    b.add_argument("--cpus", default="1,2,4,8,16,32,48,64", help="comma-separated CPU counts")
    b.add_argument("--protocols", default=",".join(DEFAULT_PROTOCOLS),
                   help=f"comma-separated protocols, of: {', '.join(PROTOCOLS)} "
                        f"(default {','.join(DEFAULT_PROTOCOLS)})")
    b.add_argument("--faults", type=int, default=None, help="work size (faults; workload default)")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--profile", default=None, help="cost profile JSON (from 'specfault calibrate')")
    b.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a workload parameter (repeatable), e.g. --param threads=100")
    b.add_argument("--knob", action="append", default=[], metavar="KEY=VALUE",
                   help="a protocol knob for every machine (repeatable), e.g. "
                        "--knob spf_vma_refcount=true (Dufour's per-VMA refcount)")
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.add_argument("--plot", default=None, metavar="FILE", help="write throughput + latency CDF plot")
    b.add_argument("--trace", type=trace_file, default=None, metavar="FILE.json",
                   help="write a trace of every run for ui.perfetto.dev / chrome://tracing "
                        "(docs/reports.md)")
    b.add_argument("--html", type=html_file, default=None, metavar="FILE.html",
                   help="write a self-contained HTML report (tables, plots)")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("calibrate", help="measure host costs and write a simulator cost profile")
    c.add_argument("--out", default="specfault-profile.json", help="profile file to write")
    c.set_defaults(func=cmd_calibrate)


def _bad(msg: str) -> int:
    print(f"specfault bench: error: {msg}", file=sys.stderr)
    return 2


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_args(args: argparse.Namespace) -> tuple[list[int], list[str], dict[str, Any], CostProfile | None]:
    """Validate; raises ValueError with a message for the user."""
    if args.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {args.workload!r}; choose from {', '.join(WORKLOADS)}")
    try:
        cpus = [int(x) for x in args.cpus.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--cpus must be comma-separated integers, not {args.cpus!r}") from None
    if not cpus or any(c < 1 or c > 1024 for c in cpus):
        raise ValueError("--cpus: each CPU count must be between 1 and 1024")
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    bad = [p for p in protocols if p not in PROTOCOLS]
    if not protocols or bad:
        raise ValueError(f"unknown protocol(s) {', '.join(bad) or '(none)'}; choose from {', '.join(PROTOCOLS)}")
    fn = WORKLOADS[args.workload][0]
    accepted = set(inspect.signature(fn).parameters) - {"protocol", "cpus"}
    if args.workload in ("page_fault2", "page_fault3"):
        accepted |= set(inspect.signature(WORKLOADS["page_fault1"][0]).parameters) - {"kind"}
    params: dict[str, Any] = {"seed": args.seed}
    if args.faults is not None:
        if args.faults < 1:
            raise ValueError("--faults must be positive")
        params["faults"] = args.faults
    for kv in args.param:
        key, eq, val = kv.partition("=")
        if not eq or key not in accepted or key in ("profile", "seed", "faults"):
            raise ValueError(f"--param {kv!r}: {args.workload} takes "
                             f"{', '.join(sorted(accepted - {'profile', 'seed', 'faults'}))}")
        params[key] = _value(val)
    knobs: dict[str, Any] = {}
    for kv in getattr(args, "knob", []):
        key, eq, val = kv.partition("=")
        if not eq or not key:
            raise ValueError(f"--knob {kv!r}: expected KEY=VALUE")
        knobs[key] = knob_info(key).parse(val)     # unknown or bad: ValueError
    if knobs:
        params["knobs"] = knobs
    profile = None
    if args.profile:
        try:
            profile = CostProfile.load(args.profile)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"--profile {args.profile}: {exc}") from None
    return cpus, protocols, params, profile


def table(cmp: Comparison) -> Any:
    from rich.table import Table

    elapsed = cmp.workload in ELAPSED
    t = Table(title=f"{cmp.workload} ({', '.join(f'{k}={v}' for k, v in cmp.params.items())})")
    for col in ("CPUs", "protocol", "elapsed ms" if elapsed else "faults/s", "vs cl.",
                "f/CPU-s", "fault p50/p99 µs", "wr p99 µs", "lock wait p99", "hold p99",
                "aborts", "xfer/f"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in sorted(cmp.runs, key=lambda r: (r.cpus, PROTOCOLS.index(r.protocol))):
        ratio = cmp.ratio(r.protocol, r.cpus)
        fig = f"{r.wall_us / 1e3:.3f}" if elapsed else (
            f"{r.ops_per_s / 1e6:.2f}M ops" if cmp.workload == "mmap1" else f"{r.faults_per_s / 1e6:.2f}M")
        t.add_row(str(r.cpus), r.protocol, fig, f"{ratio:.2f}x" if ratio is not None else "-",
                  f"{r.faults_per_cpu_s / 1e6:.2f}M",
                  f"{r.fault_lat['p50']:.1f}/{r.fault_lat['p99']:.1f}",
                  f"{r.writer_lat['p99']:.1f}", f"{r.lock_wait['p99']:.1f}",
                  f"{r.lock_hold['p99']:.1f}", f"{r.abort_rate * 100:.2f}%",
                  f"{r.transfers_per_fault:.2f}")
    return t


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        cpus, protocols, params, profile = parse_args(args)
    except ValueError as exc:
        return _bad(str(exc))
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    total = len(cpus) * len(protocols)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as prog:
        task = prog.add_task("simulating", total=total)

        def step(what: str) -> None:
            prog.update(task, advance=1, description=what)

        writer = None
        if args.trace:
            from specfault.report.perfetto import TraceWriter
            writer = TraceWriter(args.trace, metadata={"command": _command(args)})
        try:
            cmp = compare(args.workload, cpus=cpus, protocols=protocols, profile=profile,
                          progress=step, trace=writer, **params)
        except TypeError as exc:
            return _bad(str(exc))
        finally:
            if writer is not None:
                writer.close()
    if args.html:
        from specfault.report.html import bench_report
        bench_report(cmp, _command(args), trace=args.trace).write(args.html)
    if args.plot:
        from specfault.sim.plots import plot
        plot(cmp, args.plot)
    if args.json:
        print(json.dumps(cmp.to_dict(), indent=2))
    else:
        Console(width=max(150, Console().width)).print(table(cmp))
        if args.plot:
            print(f"plot written to {args.plot}")
    for what, path in (("trace", args.trace), ("HTML report", args.html)):
        if path:
            print(f"{what} written to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (for reports and traces)."""
    import shlex

    def csv(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    parts = ["specfault", "bench", "-w", args.workload, "--cpus", csv(args.cpus),
             "--protocols", csv(args.protocols)]
    if args.faults is not None:
        parts += ["--faults", str(args.faults)]
    parts += ["--seed", str(args.seed)]
    for opt in ("param", "knob"):
        for kv in getattr(args, opt, []) or []:
            parts += [f"--{opt}", kv if isinstance(kv, str) else "=".join(map(str, kv))]
    if isinstance(args.profile, str):
        parts += ["--profile", args.profile]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from specfault.sim.calibrate import calibrate

    try:
        prof, m = calibrate(args.out)
    except OSError as exc:
        print(f"specfault calibrate: error: {exc}", file=sys.stderr)
        return 2
    for k, v in m.items():
        print(f"{k:16s} {v:10.1f}")
    print(f"fault_entry_ns   {prof.fault_entry_ns:10.1f}  (derived)")
    print(f"vma_modify_ns    {prof.vma_modify_ns:10.1f}  (derived)")
    print(f"profile written to {args.out}")
    return 0
