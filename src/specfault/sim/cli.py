"""``specfault bench`` and ``specfault calibrate``.

    specfault bench [--workload W] [--cpus 1,2,4,...] [--protocols classic,speculative,pervma[,dufour]]
                    [--faults N] [--seed S] [--profile FILE] [--param KEY=VALUE ...]
                    [--knob KEY=VALUE ...] [--json] [--plot FILE] [--max-memory SIZE]
    specfault calibrate [--out FILE]

Exit codes: see EXIT_CODES.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

from specfault import cliargs
from specfault.sim.bench import DEFAULT_PROTOCOLS, ELAPSED, PROTOCOLS, Comparison, run
from specfault.sim.cost import CostProfile
from specfault.sim.workloads import WORKLOADS

MAX_CPUS = 1024
EXIT_CODES = """Exit codes: 0 success, 1 a simulation failed, 2 bad input (refused before
anything runs: unknown workload/protocol/parameter/knob, a value out of
range, a profile that does not load or has a negative or non-finite cost, a
plot file that cannot be written, a run estimated to need more memory than
--max-memory), 130 interrupted (Ctrl-C: the runs done so far are printed,
marked partial)."""

# ---- workload parameters: every keyword a workload takes, with its range ----
_NS = (float, 0.0, 1e10)            # a time in ns: finite, >= 0, at most 10 s
#: name -> (type, lowest, highest)
PARAMS: dict[str, tuple[type, float, float]] = {
    "threads": (int, 0, 100_000),   # 0: the workload's default (per CPU)
    "think_ns": _NS, "work_ns": _NS, "io_ns": _NS, "loader_io_ns": _NS,
    "vma_per_thread": (bool, 0, 1), "guard": (bool, 0, 1),
    "vmas": (int, 1, 100_000), "pages": (int, 1, 1 << 20), "chunk_pages": (int, 1, 1 << 20),
    "max_pages": (int, 1, 1 << 20), "map_pages": (int, 1, 1 << 20),
    "loaders": (int, 0, 1000), "maps": (int, 0, 100_000),
    "free_frac": (float, 1e-4, 1.0),
    # pressure
    "passes": (int, 1, 1000), "limit": (float, 0.01, 16.0), "faulters": (int, 1, 10_000),
    "writer_pages": (int, 1, 1 << 16), "writer_gap_ns": _NS,
}
#: parameters that take one of a few words
CHOICES: dict[str, tuple[str, ...]] = {"other": ("anon", "file")}
#: set by the command itself, never by --param
_FIXED = {"protocol", "cpus", "profile", "seed", "faults", "kind", "config"}
#: app_launch keeps 4,096 spare frames; each fault thread's heap takes one
APP_LAUNCH_MAX_THREADS = 4_000

# ---- memory estimate (peak RSS; benchmarks/bench_cli_memory.py measures it) ----
#: bytes per simulated frame (the free list), per fault (page, PTE, cache
#: lines, latency sample), per thread (coroutine, task, stacks), per page of
#: the file workloads' files (data and page cache), and the interpreter
B_FRAME, B_FAULT, B_THREAD, B_FILE_PAGE, B_BASE = 80, 600, 3 << 10, 7680, 64 << 20

EXAMPLES = """examples:
  specfault bench -w pft --cpus 1,48 --faults 100000            # Lespinasse's pft: SPF vs classic
  specfault bench -w app_launch --cpus 8 --protocols classic,speculative,pervma,dufour
  specfault bench -w pft --cpus 16 --param vma_per_thread=true  # one VMA per thread
  specfault bench -w pft --cpus 16 --protocols speculative --knob spf_vma_refcount=true
  specfault bench -w spf_test --cpus 4,16 --json > spf.json
  specfault bench -w pft --cpus 1,8,32 --plot pft.png           # throughput + latency CDF
  specfault calibrate --out host.json && specfault bench --profile host.json

memory: about 80 B per simulated frame + 600 B per fault + 3 KiB per thread
(+ 7.5 KiB per file page for page_fault2/3); pft needs 2 frames per fault, so
--faults 1000000 needs about 0.8 GiB.  A run estimated above --max-memory is
refused.
"""


def _params_help() -> str:
    """'workload parameters' for the epilog: each workload's, with ranges."""
    lines = ["workload parameters (--param KEY=VALUE; --faults sets the work size):"]
    for name in WORKLOADS:
        items = []
        for key in accepted_params(name):
            if key in CHOICES:
                items.append(f"{key}={'|'.join(CHOICES[key])}")
                continue
            kind, lo, hi = PARAMS[key]
            items.append(f"{key}=true|false" if kind is bool else
                         f"{key}={cliargs.fmt(lo)}..{cliargs.fmt(hi)}")
        lines.append(f"  {name:12} {', '.join(items) or '(none)'}")
    lines.append("  (threads=0: the workload's default, one per CPU; app_launch: 4 per CPU, at most "
                 f"{APP_LAUNCH_MAX_THREADS:,})")
    return "\n".join(lines)


def _workload_help() -> str:
    return "; ".join(f"{name}: {desc}" for name, (_, desc) in WORKLOADS.items())


def _cpu_list(text: str) -> list[int]:
    conv = cliargs.int_range(1, MAX_CPUS, "a CPU count")
    parts = [x for x in text.split(",") if x.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated CPU counts, e.g. 1,2,4")
    cpus = [conv(x) for x in parts]
    if len(set(cpus)) != len(cpus):
        raise argparse.ArgumentTypeError(f"a CPU count appears twice in {text!r}")
    if len(cpus) > 32:
        raise argparse.ArgumentTypeError("at most 32 CPU counts")
    return cpus


def _protocol_list(text: str) -> list[str]:
    conv = cliargs.choice(PROTOCOLS, "protocol")
    protocols = [conv(p.strip()) for p in text.split(",") if p.strip()]
    if not protocols:
        raise argparse.ArgumentTypeError(f"expected comma-separated protocols of {', '.join(PROTOCOLS)}")
    if len(set(protocols)) != len(protocols):
        raise argparse.ArgumentTypeError(f"a protocol appears twice in {text!r}")
    return protocols


# ---- cost profiles ----
#: fields that must be > 0 (a divisor, a period, a batch), not just >= 0
_POSITIVE = {"dram_gbps", "rcu_gp_ns", "timeslice_ns", "pcp_batch"}


def profile_errors(data: dict[str, Any]) -> list[str]:
    """Why ``data`` (a profile's JSON object) is not a valid profile: every
    cost a finite number >= 0 (> 0 where it divides or paces), work and
    I/O kinds known."""
    errors: list[str] = []
    known = {f.name: f for f in fields(CostProfile)}
    for key, value in data.items():
        if key not in known:
            errors.append(f"unknown key {key!r}{cliargs.close_matches(key, known)}")
        elif key == "source":
            if not isinstance(value, str):
                errors.append("source must be a string")
        elif key in ("work_ns", "io_ns"):
            if not isinstance(value, dict):
                errors.append(f"{key} must be an object of kind: ns")
                continue
            kinds = getattr(CostProfile(), key)
            for kind, ns in value.items():
                if kind not in kinds:
                    errors.append(f"unknown {key} kind {kind!r}{cliargs.close_matches(kind, kinds)}")
                elif not _finite(ns) or ns < 0:
                    errors.append(f"{key}.{kind} must be a finite number >= 0, not {ns!r}")
        elif not _finite(value) or value < 0:
            errors.append(f"{key} must be a finite number >= 0, not {value!r}")
        elif key in _POSITIVE and value <= 0:
            errors.append(f"{key} must be > 0, not {value!r}")
        elif key == "pcp_batch" and not float(value).is_integer():
            errors.append(f"{key} must be a whole number, not {value!r}")
    return errors


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def profile_arg(text: str) -> CostProfile:
    """``--profile FILE``: a readable JSON cost profile with valid costs."""
    raw = cliargs.read_text(text, 1 << 20, "cost profile")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise argparse.ArgumentTypeError(f"{text} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError(f"{text}: a cost profile is a JSON object")
    errors = profile_errors(data)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise argparse.ArgumentTypeError(f"{text}: {errors[0]}{more}")
    work = dict(CostProfile().work_ns)
    work.update(data.pop("work_ns", {}))
    io = dict(CostProfile().io_ns)
    io.update(data.pop("io_ns", {}))
    if "pcp_batch" in data:
        data["pcp_batch"] = int(data["pcp_batch"])
    return CostProfile(work_ns=work, io_ns=io, **data)


def register(sub: Any) -> None:
    b = sub.add_parser("bench", help="simulate the fault protocols side by side",
                       description=textwrap.fill(
                           "Run a workload under each protocol at each CPU count on the "
                           "simulated machine; print figures and ratios vs classic.", 78)
                       + "\n\n" + EXIT_CODES,
                       epilog=EXAMPLES + "\n" + _params_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--workload", "-w", default="pft", type=cliargs.choice(WORKLOADS, "workload"),
                   help=f"default pft; {_workload_help()}")
    b.add_argument("--cpus", default=[1, 2, 4, 8, 16, 32, 48, 64], type=_cpu_list, metavar="N,N,...",
                   help=f"comma-separated CPU counts, each 1..{MAX_CPUS} (default 1,2,4,8,16,32,48,64)")
    b.add_argument("--protocols", default=list(DEFAULT_PROTOCOLS), type=_protocol_list, metavar="P,P,...",
                   help=f"comma-separated, of: {', '.join(PROTOCOLS)} (default {','.join(DEFAULT_PROTOCOLS)})")
    b.add_argument("--faults", type=cliargs.int_range(1, 10**9), default=None, metavar="N",
                   help="work size: faults (mmap1: syscalls); the workload's default if not given")
    b.add_argument("--seed", type=cliargs.seed, default=1, help="workload seed (default 1)")
    b.add_argument("--profile", type=profile_arg, default=None, metavar="FILE",
                   help="cost profile JSON (from 'specfault calibrate'); every cost finite and >= 0")
    b.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", type=cliargs.key_value,
                   help="a workload parameter (repeatable), e.g. --param threads=100; each "
                        "workload's are listed below")
    b.add_argument("--knob", action="append", default=[], metavar="KEY=VALUE", type=cliargs.key_value,
                   help="a protocol knob for every machine (repeatable), e.g. "
                        "--knob spf_vma_refcount=true (Dufour's per-VMA refcount)")
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.add_argument("--plot", type=cliargs.plot_file, default=None, metavar="FILE",
                   help="write throughput + latency CDF plot (.png, .svg, .pdf, ...)")
    b.add_argument("--max-memory", type=cliargs.size, default=None, metavar="SIZE",
                   help="refuse a run estimated to need more (default: half this machine's "
                        "memory, at most 4G)")
    b.add_argument("--trace", type=cliargs.writable_file(["json"], "trace file"), default=None,
                   metavar="FILE.json",
                   help="write a trace of every run for ui.perfetto.dev / chrome://tracing "
                        "(docs/reports.md)")
    b.add_argument("--html", type=cliargs.writable_file(["html", "htm"], "HTML report"), default=None,
                   metavar="FILE.html", help="write a self-contained HTML report (tables, plots)")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("calibrate", help="measure host costs and write a simulator cost profile",
                       description=textwrap.fill(
                           "Measure this host's minor-fault, mmap+munmap, copy_page and "
                           "clear_page costs (about a second) and write a cost profile for "
                           "'specfault bench --profile' (every cost checked finite and >= 0 "
                           "before it is written).", 78) + "\n\n" + textwrap.fill(
                           "Exit codes: 0 written, 1 the measurements gave an invalid profile "
                           "(nothing written), 2 bad input (an --out that cannot be written), "
                           "130 interrupted (the measurements so far are printed; nothing is "
                           "written).", 78),
                       epilog="example:\n  specfault calibrate --out host.json && "
                              "specfault bench -w pft --cpus 1,8 --profile host.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--out", default="specfault-profile.json", type=cliargs.writable_file(None, "profile"),
                   metavar="FILE", help="profile file to write (default specfault-profile.json)")
    c.set_defaults(func=cmd_calibrate)


def accepted_params(workload: str) -> list[str]:
    """The keyword parameters ``workload`` takes through --param."""
    fn = WORKLOADS[workload][0]
    names = set(inspect.signature(fn).parameters)
    if workload in ("page_fault2", "page_fault3"):
        names |= set(inspect.signature(WORKLOADS["page_fault1"][0]).parameters)
    return sorted(names - _FIXED - {"kw"})


def _param_value(workload: str, key: str, text: str) -> Any:
    accepted = accepted_params(workload)
    if key not in accepted:
        raise cliargs.BadArgument("--param", f"{workload} takes no parameter {key!r}"
                                             f"{cliargs.close_matches(key, accepted)}; it takes "
                                             f"{', '.join(accepted)}")
    if key in CHOICES:
        if text not in CHOICES[key]:
            raise cliargs.BadArgument("--param", f"{key} is one of {', '.join(CHOICES[key])}, not {text!r}")
        return text
    kind, lo, hi = PARAMS[key]
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise cliargs.BadArgument("--param", f"{key} is true or false, not {text!r}")
        return text.lower() == "true"
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not lo <= value <= hi:
        what = "an integer" if kind is int else "a finite number"
        raise cliargs.BadArgument("--param", f"{key} must be {what} in {cliargs.fmt(lo)}..{cliargs.fmt(hi)}, "
                                             f"not {text!r}")
    return value


def _knobs(pairs: list[tuple[str, str]], protocols: list[str], cpus: int) -> dict[str, Any]:
    """--knob values, typed by the knob registry (config.KNOBS) and checked
    by building the Config each machine gets."""
    from specfault.config import Config, knob_info

    knobs: dict[str, Any] = {}
    for key, text in pairs:
        if key in ("nr_frames", "nr_cpus", "fault_protocol"):
            raise cliargs.BadArgument("--knob", f"{key} is set by bench itself (--cpus, --protocols, "
                                                "the workload)")
        try:
            knobs[key] = knob_info(key).parse(text)
        except ValueError as exc:
            raise cliargs.BadArgument("--knob", str(exc)) from None
    for p in protocols:
        try:
            Config(nr_cpus=cpus, fault_protocol=p).with_(**knobs)
        except (ValueError, TypeError) as exc:
            raise cliargs.BadArgument("--knob", str(exc)) from None
    return knobs


def estimate_bytes(workload: str, cpus: int, params: dict[str, Any]) -> tuple[float, str]:
    """Peak memory of the largest run (``cpus`` CPUs), and which size
    argument drives it."""
    fn = WORKLOADS[workload][0]
    sig = {k: v.default for k, v in inspect.signature(fn).parameters.items()
           if v.default is not inspect.Parameter.empty}
    if workload in ("page_fault2", "page_fault3"):
        sig = {k: v.default for k, v in inspect.signature(WORKLOADS["page_fault1"][0]).parameters.items()
               if v.default is not inspect.Parameter.empty}
    p = {**sig, **params}
    f = p["faults"]
    threads, frames, faults, file_pages = cpus, 8192, f, 0
    if workload == "pft":
        threads, frames = p["threads"] or cpus, 2 * f + 8192
    elif workload.startswith("page_fault"):
        file_pages = p["chunk_pages"] * cpus if workload != "page_fault1" else 0
        frames = 2 * p["chunk_pages"] * cpus + file_pages + 8192
    elif workload == "mmap1":
        faults = f // 10
    elif workload == "ebizzy":
        frames = 2 * p["max_pages"] * cpus + 8192
    elif workload == "spf_test":
        threads = max(1, f // (p["vmas"] * p["pages"]))
        faults = threads * p["vmas"] * p["pages"]
        frames = 2 * faults + 8192
    elif workload == "app_launch":
        threads = (p["threads"] or 4 * cpus) + p["loaders"]
        need = f + p["loaders"] * p["maps"] * p["map_pages"] + 4096
        frames = int(need / p["free_frac"]) + 1
        # and about ``2 * need`` pages of other apps' page cache, each a
        # Page like a fault's
        faults = f + p["loaders"] * p["maps"] + 2 * need
    elif workload == "pressure":
        threads = p["faulters"] + 1
        region = max(1, f // p["passes"])
        frames = int(region * p["limit"]) + region // 16 + 8192
        faults = f + 2 * region                  # + a swap slot per page
    need_bytes = (B_BASE + B_FRAME * frames + B_FAULT * faults + B_THREAD * threads
                  + B_FILE_PAGE * file_pages)
    driver = "--faults"
    if workload == "app_launch" and "free_frac" in params:
        driver = "--param free_frac"
    elif B_FILE_PAGE * file_pages > B_FAULT * faults:
        driver = "--param chunk_pages" if "chunk_pages" in params else "--cpus"
    elif B_THREAD * threads > B_FAULT * faults:
        driver = "--param threads" if "threads" in params else "--cpus"
    return need_bytes, driver


def parse_args(args: argparse.Namespace) -> tuple[list[int], list[str], dict[str, Any], CostProfile | None]:
    """Check what argparse could not alone; raises BadArgument."""
    cpus: list[int] = args.cpus
    protocols: list[str] = args.protocols
    params: dict[str, Any] = {"seed": args.seed}
    if args.faults is not None:
        params["faults"] = args.faults
    for key, text in args.param:
        if key in _FIXED:
            raise cliargs.BadArgument("--param", f"{key} is set by bench itself"
                                                 + (" (use --faults)" if key == "faults" else
                                                    " (use --seed)" if key == "seed" else ""))
        params[key] = _param_value(args.workload, key, text)
    if args.workload == "app_launch":
        n = params.get("threads") or 4 * max(cpus)
        if n > APP_LAUNCH_MAX_THREADS:
            arg = "--param threads" if params.get("threads") else "--cpus"
            raise cliargs.BadArgument(arg, f"app_launch runs {n:,} fault threads here (4 per CPU "
                                           f"unless threads=N), at most {APP_LAUNCH_MAX_THREADS:,}")
    if args.knob:
        params["knobs"] = _knobs(args.knob, protocols, max(cpus))
    need, driver = estimate_bytes(args.workload, max(cpus), params)
    limit = args.max_memory or cliargs.default_memory_limit()
    cliargs.check_memory(driver, need, limit, f"{args.workload} at {max(cpus)} CPUs")
    return cpus, protocols, params, args.profile


def table(cmp: Comparison, partial: bool = False) -> Any:
    from rich.table import Table

    elapsed = cmp.workload in ELAPSED
    t = Table(title=f"{cmp.workload} ({', '.join(f'{k}={v}' for k, v in cmp.params.items())})"
                    + (" — partial: interrupted" if partial else ""))
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
    cpus, protocols, params, profile = parse_args(args)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from specfault.sim.engine import SimError

    knobs = params.pop("knobs", None)
    cmp = Comparison(args.workload, dict(params, **({"knobs": dict(knobs)} if knobs else {})))
    err = Console(stderr=True)
    total = len(cpus) * len(protocols)
    interrupted = failed = None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as prog:
        task = prog.add_task(f"simulating {args.workload}", total=total)
        writer = None
        if args.trace:
            from specfault.report.perfetto import TraceWriter
            writer = TraceWriter(args.trace, metadata={"command": _command(args)})
        share = writer.budget // total if writer is not None else None
        try:
            for n in cpus:
                for p in protocols:
                    prog.update(task, description=f"{args.workload} {p} {n} CPUs")
                    cmp.runs.append(run(args.workload, p, n, profile=profile, knobs=knobs, trace=writer,
                                        trace_budget=share, **params))
                    prog.advance(task)
        except KeyboardInterrupt:
            interrupted = f"interrupted after {len(cmp.runs)} of {total} runs"
        except SimError as exc:
            failed = cliargs.one_line(str(exc))
        finally:
            if writer is not None:
                writer.close()
    partial = interrupted is not None or failed is not None
    out = cmp.to_dict()
    out["partial"] = partial
    if args.json:
        print(json.dumps(out, indent=2), flush=True)
    elif cmp.runs:
        Console(width=max(150, Console().width)).print(table(cmp, partial))
        sys.stdout.flush()
    if interrupted:
        print(f"specfault bench: {interrupted} (partial results printed; no plot)", file=sys.stderr)
        return 130
    if failed:
        print(f"specfault bench: a simulation failed: {failed}", file=sys.stderr)
        return 1
    if args.html:
        from specfault.report.html import bench_report
        bench_report(cmp, _command(args), trace=args.trace, data=out).write(args.html)
    if args.plot:
        from specfault.sim.plots import plot
        try:
            plot(cmp, str(args.plot))
        except (OSError, ValueError) as exc:
            print(f"specfault bench: cannot write the plot {args.plot}: {exc}", file=sys.stderr)
            return 1
        if not args.json:
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
    from specfault.sim import calibrate as cal

    out: Path = args.out
    m: dict[str, float] = {}
    steps = (("fault_ns", cal.fault_ns), ("mmap_munmap_ns", cal.mmap_munmap_ns))
    try:
        for name, fn in steps:
            m[name] = fn()
            print(f"{name:16s} {m[name]:10.1f}", flush=True)
        copy, clear = cal.copy_page_ns()
        m["copy_page_ns"], m["clear_page_ns"] = copy, clear
        print(f"{'copy_page_ns':16s} {copy:10.1f}\n{'clear_page_ns':16s} {clear:10.1f}", flush=True)
        prof = cal.profile_from(m)
    except KeyboardInterrupt:
        print(f"specfault calibrate: interrupted after {len(m)} of 4 measurements "
              "(partial: printed above); no profile written", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"specfault calibrate: a measurement failed: {exc}", file=sys.stderr)
        return 1
    from dataclasses import asdict

    errors = profile_errors(asdict(prof))
    if errors:
        print(f"specfault calibrate: the measurements give an invalid profile: {errors[0]}; "
              "nothing written", file=sys.stderr)
        return 1
    try:
        prof.save(out)
    except OSError as exc:
        print(f"specfault calibrate: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"fault_entry_ns   {prof.fault_entry_ns:10.1f}  (derived)")
    print(f"vma_modify_ns    {prof.vma_modify_ns:10.1f}  (derived)")
    print(f"profile written to {out}")
    return 0
