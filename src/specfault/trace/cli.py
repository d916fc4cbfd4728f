"""``specfault trace``: real programs, recorded on the host and replayed.

    specfault trace record [-o FILE] [--json] [--] CMD ARGS...
    specfault trace replay FILE [--protocol P] [--json]
    specfault trace sim FILE [--protocols P,...] [--cpus N,...] [--json] [--plot FILE]

``record`` runs CMD on this machine under perf (and ptrace), with
address-space randomisation off, and writes what the kernel did to its
address spaces to FILE (docs/traces.md).  ``replay`` runs a trace in the
sequential model and compares every result with the host's.  ``sim`` runs
the recorded tasks as threads of the simulator, under each protocol.

Exit codes: 0 success (replay: full agreement), 1 a finding (replay: a
divergence or something the model does not model; record: the command
could not be recorded), 2 bad input or perf unusable here (the message
says what to install or set), 130 interrupted (Ctrl-C: record writes the
trace so far marked partial; replay and sim print what they had).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

from specfault import cliargs

EXAMPLES = """examples:
  specfault trace record -o ls.trace.gz -- ls -l /         # record ls on this host
  specfault trace replay ls.trace.gz                        # replay it in the model, compare
  specfault trace replay tests/trace_corpus/java-version.trace.gz --protocol pervma
  specfault trace sim tests/trace_corpus/java-version.trace.gz --cpus 2,8,32
"""

#: the largest trace file accepted (compressed)
MAX_TRACE_BYTES = 256 << 20


def _err(msg: str) -> int:
    print(f"specfault trace: {cliargs.one_line(msg)}", file=sys.stderr)
    return 2


def register(sub: Any) -> None:
    p = sub.add_parser("trace", help="record a real program on the host; replay and simulate it",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="trace_command", metavar="ACTION", parser_class=type(p))
    r = tsub.add_parser("record", help="run a command under perf and write its trace",
                        description="Run CMD on this machine under perf (and ptrace), with "
                                    "address-space randomisation off, and write its trace: every "
                                    "memory syscall, page fault, task, and mapping, with file "
                                    "sizes and identities (never contents). Needs perf and root "
                                    "(or perf_event_paranoid -1).",
                        epilog="examples:\n  specfault trace record -o java.trace.gz -- java -version\n"
                               "  specfault trace record -- python3 -c pass   # writes python3.trace.gz",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("-o", "--out", type=cliargs.writable_file(None, "trace file"), default=None,
                   metavar="FILE", help="the trace to write (default: CMD.trace.gz here)")
    r.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD ARGS...",
                   help="the command to record (put -- before it if it has options)")
    r.set_defaults(func=main_record)
    register_replay(tsub)
    register_sim(tsub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def main_record(args: argparse.Namespace) -> int:
    from specfault.trace.perf import PerfUnavailable, check_perf
    from specfault.trace.record import RecordError, record

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise cliargs.BadArgument("CMD", "no command given (specfault trace record -- CMD ARGS...)")
    if shutil.which(cmd[0]) is None:
        raise cliargs.BadArgument("CMD", f"command not found: {cmd[0]}")
    out = str(args.out) if args.out is not None else \
        cliargs.writable_file(None, "trace file")(f"{os.path.basename(cmd[0])}.trace.gz")
    try:
        setup = check_perf()
    except PerfUnavailable as exc:
        return _err(f"cannot record here: {exc}")

    def note(msg: str) -> None:
        print(f"specfault trace record: {msg}", file=sys.stderr)

    try:
        rec = record(cmd, str(out), setup, note, quiet_stdout=args.json)
    except PerfUnavailable as exc:
        return _err(f"cannot record here: {exc}")
    except RecordError as exc:
        print(f"specfault trace record: {cliargs.one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("specfault trace record: interrupted before the trace was written", file=sys.stderr)
        return 130
    h = rec.trace.header
    counts = h["counts"]
    summary = {"trace": str(out), "bytes": rec.bytes, "command": cmd, "exit_status": rec.status,
               "partial": rec.interrupted, "tasks": len(rec.trace.tasks),
               "files": len(rec.trace.files), "events": counts, "lost": h["lost"],
               "dropped": h["dropped"], "final_layouts": len(rec.trace.finals),
               "ptrace": h["ptrace"], "duration_ns": h["duration_ns"]}
    if args.json:
        print(json.dumps(summary))
    else:
        faults = counts.get("fault", 0)
        calls = ", ".join(f"{k[4:]} {v}" for k, v in sorted(counts.items()) if k.startswith("sys:"))
        print(f"{out}: {cliargs.human(rec.bytes)}, {len(rec.trace.tasks)} task(s), "
              f"{h['duration_ns'] / 1e6:.1f} ms recorded, exit status {rec.status}"
              + (" (partial: interrupted)" if rec.interrupted else ""))
        print(f"  faults {faults} user, {counts.get('kfault', 0)} kernel; {calls}; "
              f"clones {counts.get('clone', 0)}; execs {counts.get('exec', 0)}")
        if h["lost"]:
            print(f"  warning: perf lost {h['lost']} event(s): the trace is incomplete")
        if not h["ptrace"]:
            print(f"  note: no ptrace ({h.get('ptrace_unavailable', '')}): no final layout, "
                  f"clone3 flags inferred")
        print(f"  replay: specfault trace replay {out}")
    return 130 if rec.interrupted else 0


# ------------------------------------------------------------------ replay
def _trace_arg(text: str) -> Any:
    """FILE: a readable trace this version can read (checked whole)."""
    from specfault.trace import format as fmt

    path = os.path.expanduser(text)
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    try:
        trace = fmt.load(path, MAX_TRACE_BYTES)
    except fmt.TraceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from None
    if not trace.events or trace.events[0]["k"] != "exec":
        raise argparse.ArgumentTypeError(f"{text}: the trace does not start with an exec")
    trace.path = text                                  # type: ignore[attr-defined]
    return trace


def _progress(total: int, what: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = Console(stderr=True)
    return Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not err.is_terminal, transient=True, console=err)


def main_replay(args: argparse.Namespace) -> int:
    from specfault.trace.replay import iter_lines, replay

    trace = args.trace
    name = trace.path
    with _progress(len(trace.events), f"replay ({args.protocol})") as progress:
        task = progress.add_task("events", total=len(trace.events))
        res = replay(trace, args.protocol, name,
                     progress=lambda i: progress.update(task, completed=i))
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        for line in iter_lines(res, trace.files):
            print(line)
    if res.partial:
        print("specfault trace replay: interrupted", file=sys.stderr)
        return 130
    return 0 if res.agreed else 1


def register_replay(tsub: Any) -> None:
    from specfault.sim.bench import PROTOCOLS

    r = tsub.add_parser("replay", help="replay a trace in the model and compare it with the host",
                        description="Replay every task's events of a trace in the sequential model, "
                                    "in timestamp order, and compare each syscall's result, each "
                                    "fault's outcome, each mapping perf reported and each address "
                                    "space's layout at exit with the host's. Prints the agreement "
                                    "and the first divergence. Exit 0 on full agreement, 1 "
                                    "otherwise (a divergence, or something the model does not "
                                    "model, named).",
                        epilog="examples:\n  specfault trace replay tests/trace_corpus/python3-c-pass.trace.gz\n"
                               "  specfault trace replay java.trace.gz --protocol speculative --json",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("trace", type=_trace_arg, metavar="FILE", help="a trace written by 'trace record'")
    r.add_argument("--protocol", type=cliargs.choice(PROTOCOLS, "protocol"), default="classic",
                   help=f"the fault protocol ({', '.join(PROTOCOLS)}; default classic)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=main_replay)


# --------------------------------------------------------------------- sim
MAX_CPUS = 1024


def _cpu_list(text: str) -> list[int]:
    from specfault.sim.cli import _cpu_list as cpus

    return cpus(text)


def _protocol_list(text: str) -> list[str]:
    from specfault.sim.cli import _protocol_list as protocols

    return protocols(text)


def _profile(text: str) -> Any:
    from specfault.sim.cli import profile_arg

    return profile_arg(text)


def register_sim(tsub: Any) -> None:
    s = tsub.add_parser("sim", help="simulate a trace's tasks as threads under each protocol",
                        description="Run the recorded tasks of a trace as threads of the simulator, "
                                    "each with its own events and the CPU and blocked time it had "
                                    "between them on the host, the cross-thread order the trace "
                                    "implies kept (an mm's writers in recorded order; a fault after "
                                    "the writer that made its range). Reports per protocol and CPU "
                                    "count: completion time beside the host's, mmap_lock wait and "
                                    "hold, fault and mmap-writer latency (p50/p99/max), abort "
                                    "reasons. Memory: about 100 MiB plus 4 KiB per traced event per "
                                    "run.",
                        epilog="examples:\n"
                               "  specfault trace sim tests/trace_corpus/java-version.trace.gz\n"
                               "  specfault trace sim java.trace.gz --cpus 2,8,32 --plot java.png\n"
                               "  specfault trace sim java.trace.gz --protocols classic,pervma --json",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("trace", type=_trace_arg, metavar="FILE", help="a trace written by 'trace record'")
    s.add_argument("--protocols", type=_protocol_list, default=None, metavar="P,P,...",
                   help="protocols to run (default: classic,speculative,pervma,dufour)")
    s.add_argument("--cpus", type=_cpu_list, default=None, metavar="N,N,...",
                   help="simulated CPU counts (default: the recording host's, x4 and x16)")
    s.add_argument("--profile", type=_profile, default=None, metavar="FILE",
                   help="a cost profile (specfault calibrate); default: the built-in one")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.add_argument("--plot", type=cliargs.plot_file, default=None, metavar="FILE",
                   help="a per-thread timeline for each protocol and the fault-latency CDFs")
    s.set_defaults(func=main_sim)


def _sim_table(runs: list[Any], partial: bool) -> Any:
    from rich.table import Table

    t = Table(title="simulated" + (" (partial: interrupted)" if partial else ""))
    for col in ("protocol", "CPUs", "completion", "vs classic", "fault µs p50/p99/max",
                "writer µs p50/p99/max", "mmap_lock wait µs p99/max", "order wait", "top aborts"):
        t.add_column(col, justify="left" if col in ("protocol", "top aborts") else "right")
    base = {r.result.cpus: r.result.wall_us for r in runs if r.result.protocol == "classic"}
    for r in runs:
        x = r.result
        ratio = base.get(x.cpus)
        f, w, lw = x.fault_lat, x.writer_lat, x.lock_wait
        aborts = ", ".join(f"{k.removeprefix('SPF_ABORT_')} {v}" for k, v in
                           sorted(x.aborts.items(), key=lambda kv: -kv[1])[:2])
        t.add_row(x.protocol, str(x.cpus), f"{x.wall_us / 1e3:.1f} ms",
                  f"{ratio / x.wall_us:.2f}x" if ratio else "-",
                  f"{f['p50']:.1f}/{f['p99']:.1f}/{f['max']:.0f}",
                  f"{w['p50']:.1f}/{w['p99']:.1f}/{w['max']:.0f}",
                  f"{lw['p99']:.1f}/{lw['max']:.0f}", f"{r.dep_wait_us / 1e3:.1f} ms",
                  aborts or "-")
    return t


def main_sim(args: argparse.Namespace) -> int:
    from specfault.trace.sim import sweep

    trace = args.trace
    h = trace.header
    host_cpus = int(h.get("cpus") or 2)
    cpus = args.cpus or sorted({host_cpus, 4 * host_cpus, 16 * host_cpus})
    if max(cpus) > MAX_CPUS:
        raise cliargs.BadArgument("--cpus", f"at most {MAX_CPUS} CPUs")
    protocols = args.protocols or ["classic", "speculative", "pervma", "dufour"]
    runs: list[Any] = []
    partial = False
    total = len(cpus) * len(protocols)
    try:
        with _progress(total, "simulate") as progress:
            task = progress.add_task("runs", total=total)
            for run in sweep(trace, protocols, cpus, args.profile, trace.path):
                runs.append(run)
                progress.update(task, advance=1)
    except KeyboardInterrupt:
        partial = True
    if args.plot is not None and runs:
        from specfault.trace.plot import plot

        plot(runs, str(args.plot), trace)
    if args.json:
        print(json.dumps({"trace": trace.path, "command": h.get("command"),
                          "host": {"cpus": host_cpus, "duration_ms": h.get("duration_ns", 0) / 1e6},
                          "partial": partial, "runs": [r.to_dict() for r in runs]}))
    else:
        from rich.console import Console

        con = Console()
        if not con.is_terminal:
            con = Console(width=150)
        con.print(f"{trace.path}: {' '.join(h.get('command', []))}: {len(trace.tasks)} tasks, "
                  f"{len(trace.events):,} events; recorded on {host_cpus} CPUs: "
                  f"{h.get('duration_ns', 0) / 1e6:.1f} ms from the exec to the last event")
        con.print(_sim_table(runs, partial))
        bad = [r for r in runs if r.mismatches or r.unsupported]
        for r in bad:
            con.print(f"note: {r.result.protocol} at {r.result.cpus} CPUs: {r.mismatches} result(s) "
                      f"unlike the host's; not modelled: {r.unsupported or 'none'}")
        if args.plot is not None and runs:
            con.print(f"plot: {args.plot}")
    if partial:
        print("specfault trace sim: interrupted", file=sys.stderr)
        return 130
    return 1 if any(r.mismatches for r in runs) else 0
