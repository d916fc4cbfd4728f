"""Traces for trace viewers (ui.perfetto.dev, ``chrome://tracing``): the
writer, a checker of the format, and the trace of a counterexample.

Why this format
---------------
The trace is the documented **Trace Event Format** (Google's "Trace Event
Format" document, JSON object form: ``{"traceEvents": [...], "metadata":
{...}}``), written with the standard library.  Both viewers open it: the
Perfetto UI imports it with its JSON importer, the legacy ``chrome://tracing``
(catapult) viewer reads nothing else.  The alternative, Perfetto's protobuf
format through the ``perfetto`` PyPI package (``trace_builder``), opens only
in Perfetto, needs ``protobuf``, and the package's ``TraceProcessor`` (the
only way to check such a trace) runs a ``trace_processor_shell`` binary it
downloads on first use — which cannot work on a machine without network
access (checked with perfetto 0.59.1: the download fails).  So the tests
validate traces against the documented schema instead (:func:`validate`),
including the rules Perfetto's importer enforces (slices on one track nest
or are disjoint; a flow binds to the slice enclosing its timestamp).

Time
----
Timestamps (``ts``) and durations (``dur``) are microseconds in the format;
Perfetto keeps integer nanoseconds.  Every time is written as a whole number
of nanoseconds (``1234`` ns is written ``1.234``), rounded once from the
simulator's float time, so the nesting the viewers see is the nesting the
trace was built with (rounding is monotone) and no viewer rounds again.
``displayTimeUnit`` is not set: catapult reads it as a display unit and some
Perfetto versions as the unit of ``ts``.

Events used: ``X`` (complete slices), ``C`` (counters), ``s``/``f`` (flow
arrows, bound to the enclosing slice: ``bp: "e"``), ``i`` (instants), ``M``
(process and thread names, sort order).  Strings are written as UTF-8, never
``\\uXXXX`` escapes (Perfetto's tokenizer does not take them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

#: events a trace file holds before the simulator aggregates (sim/trace.py)
DEFAULT_EVENTS = 400_000

#: a counterexample's time axis: one step of the schedule is one microsecond
STEP_NS = 1000

_PHASES = frozenset("BEXiIsCtfM") | {"b", "e", "n"}


def ns(t: float) -> int:
    """Simulated time (ns, a float) as the trace's whole nanoseconds."""
    return math.floor(t + 0.5)


def us(n: int) -> str:
    """Whole nanoseconds as the format's microseconds, exactly (no float)."""
    if n < 0:
        return "-" + us(-n)
    q, r = divmod(n, 1000)
    return f"{q}.{r:03d}" if r else str(q)


def _js(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class TraceWriter:
    """Writes one trace file, event by event (memory does not grow with the
    trace): ``with TraceWriter(path) as w: pid = w.process("name") ...``.

    ``budget`` is how many events the simulator's tracers may write in
    detail before they aggregate (see sim/trace.py); ``metadata`` is written
    at the end, so it can say how the trace was cut."""

    def __init__(self, path: str | Path, budget: int = DEFAULT_EVENTS,
                 metadata: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.budget = budget
        self.metadata: dict[str, Any] = {
            "format": "Trace Event Format (JSON object form); ts/dur in microseconds, "
                      "whole nanoseconds",
            "generator": "specfault",
        }
        if metadata:
            self.metadata.update(metadata)
        self.events = 0
        self._pids = 0
        self._flows = 0
        self._f: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self._f.write('{"traceEvents":[\n')

    # -- plumbing --
    def _put(self, text: str) -> None:
        f = self._f
        assert f is not None, "TraceWriter: already closed"
        if self.events:
            f.write(",\n")
        f.write(text)
        self.events += 1

    def close(self) -> None:
        f = self._f
        if f is None:
            return
        f.write("\n],\n")
        f.write(f'"metadata":{_js(self.metadata)}}}\n')
        f.close()
        self._f = None

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tracks --
    def process(self, name: str) -> int:
        """A new process (a group of tracks); returns its pid."""
        self._pids += 1
        pid = self._pids
        self._put(f'{{"ph":"M","pid":{pid},"tid":0,"name":"process_name","args":{{"name":{_js(name)}}}}}')
        self._put(f'{{"ph":"M","pid":{pid},"tid":0,"name":"process_sort_index",'
                  f'"args":{{"sort_index":{pid}}}}}')
        return pid

    def thread(self, pid: int, tid: int, name: str, sort: int | None = None) -> None:
        """Name the track ``tid`` of ``pid`` (and its place among them)."""
        self._put(f'{{"ph":"M","pid":{pid},"tid":{tid},"name":"thread_name","args":{{"name":{_js(name)}}}}}')
        self._put(f'{{"ph":"M","pid":{pid},"tid":{tid},"name":"thread_sort_index",'
                  f'"args":{{"sort_index":{tid if sort is None else sort}}}}}')

    # -- events (times in whole ns) --
    def slice(self, pid: int, tid: int, ts: int, dur: int, name: str, cat: str,
              args: dict[str, Any] | None = None) -> None:
        a = f',"args":{_js(args)}' if args else ""
        self._put(f'{{"ph":"X","pid":{pid},"tid":{tid},"ts":{us(ts)},"dur":{us(dur)},'
                  f'"name":{_js(name)},"cat":{_js(cat)}{a}}}')

    def instant(self, pid: int, tid: int, ts: int, name: str, cat: str,
                args: dict[str, Any] | None = None) -> None:
        a = f',"args":{_js(args)}' if args else ""
        self._put(f'{{"ph":"i","s":"t","pid":{pid},"tid":{tid},"ts":{us(ts)},'
                  f'"name":{_js(name)},"cat":{_js(cat)}{a}}}')

    def counter(self, pid: int, ts: int, name: str, value: float) -> None:
        v = repr(float(value)) if not float(value).is_integer() else str(int(value))
        self._put(f'{{"ph":"C","pid":{pid},"tid":0,"ts":{us(ts)},"name":{_js(name)},'
                  f'"args":{{"value":{v}}}}}')

    def flow(self, src: tuple[int, int, int], dst: tuple[int, int, int], name: str, cat: str) -> int:
        """An arrow from the slice enclosing ``src`` = (pid, tid, ts) to the
        slice enclosing ``dst``; returns its id."""
        self._flows += 1
        fid = self._flows
        pid, tid, ts = src
        self._put(f'{{"ph":"s","pid":{pid},"tid":{tid},"ts":{us(ts)},"id":{fid},'
                  f'"name":{_js(name)},"cat":{_js(cat)}}}')
        pid, tid, ts = dst
        self._put(f'{{"ph":"f","bp":"e","pid":{pid},"tid":{tid},"ts":{us(ts)},"id":{fid},'
                  f'"name":{_js(name)},"cat":{_js(cat)}}}')
        return fid


# ------------------------------------------------------------ reading back
@dataclass
class Slice:
    pid: int
    tid: int
    ts: int            # ns
    dur: int           # ns
    name: str
    cat: str
    args: dict[str, Any]
    depth: int = 0

    @property
    def end(self) -> int:
        return self.ts + self.dur


@dataclass
class Trace:
    """A trace read back (:func:`load`): times in whole ns, as Perfetto
    reads them (the decimal digits of ``ts``, not a float)."""

    events: list[dict[str, Any]]
    metadata: dict[str, Any]
    processes: dict[int, str] = field(default_factory=dict)
    threads: dict[tuple[int, int], str] = field(default_factory=dict)
    slices: list[Slice] = field(default_factory=list)

    def pid(self, name: str) -> int:
        """The pid of the process called ``name`` (KeyError if none)."""
        for pid, n in self.processes.items():
            if n == name:
                return pid
        raise KeyError(name)

    def track(self, pid: int, tid: int) -> list[Slice]:
        return [s for s in self.slices if s.pid == pid and s.tid == tid]

    def tid(self, pid: int, name: str) -> int:
        for (p, t), n in self.threads.items():
            if p == pid and n == name:
                return t
        raise KeyError(name)


def to_ns(v: Any) -> int:
    """A ``ts``/``dur`` value as Perfetto reads it: its decimal digits
    shifted three places (sub-nanosecond digits dropped)."""
    if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
        raise TypeError(f"not a number: {v!r}")
    return int(Decimal(v) * 1000)


def load(path: str | Path) -> Trace:
    """Read a trace written by :class:`TraceWriter` (or any JSON-object-form
    Trace Event file); slices get their depth on their track."""
    data = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
    if isinstance(data, list):
        data = {"traceEvents": data}
    tr = Trace(events=data.get("traceEvents", []), metadata=data.get("metadata", {}))
    for e in tr.events:
        ph = e.get("ph")
        if ph == "M" and e.get("name") == "process_name":
            tr.processes[e["pid"]] = e["args"]["name"]
        elif ph == "M" and e.get("name") == "thread_name":
            tr.threads[(e["pid"], e["tid"])] = e["args"]["name"]
        elif ph == "X":
            tr.slices.append(Slice(e["pid"], e["tid"], to_ns(e["ts"]), to_ns(e["dur"]), e["name"],
                                   e.get("cat", ""), e.get("args", {})))
    _nest(tr.slices)
    return tr


def _nest(slices: list[Slice]) -> list[str]:
    """Give each slice its depth on its track; return the nesting errors
    (a slice that starts inside another and ends after it)."""
    problems: list[str] = []
    by_track: dict[tuple[int, int], list[Slice]] = {}
    for s in slices:
        by_track.setdefault((s.pid, s.tid), []).append(s)
    for key, lst in by_track.items():
        lst.sort(key=lambda s: (s.ts, -s.dur))
        stack: list[Slice] = []
        for s in lst:
            while stack and stack[-1].end <= s.ts:
                stack.pop()
            if stack and s.end > stack[-1].end:
                p = stack[-1]
                problems.append(f"track {key}: slice {s.name!r} [{s.ts}, {s.end}] overlaps "
                                f"{p.name!r} [{p.ts}, {p.end}] without nesting in it")
            s.depth = len(stack)
            stack.append(s)
    return problems


def validate(path: str | Path) -> list[str]:
    """Check a trace file against the Trace Event Format (JSON object form)
    and the rules Perfetto's importer applies; returns the problems (empty
    when the trace is good).

    Schema: every event an object with a known ``ph``; ``pid``/``tid``
    integers; ``ts`` a number (not for ``M``); ``X`` a ``dur`` >= 0;
    ``C`` numeric ``args``; ``i`` a scope ``s`` of g/p/t; ``s``/``f`` an
    ``id``; ``M`` a known name with ``args``.  Perfetto: slices on one track
    nest or are disjoint; every flow has its start and end, each inside a
    slice on its track; the top-level ``metadata`` is an object."""
    problems: list[str] = []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, ValueError) as exc:
        return [f"not readable as JSON: {exc}"]
    if isinstance(data, dict):
        events = data.get("traceEvents")
        if not isinstance(events, list):
            return ["no traceEvents array"]
        if "metadata" in data and not isinstance(data["metadata"], dict):
            problems.append("metadata is not an object")
    elif isinstance(data, list):
        events = data
    else:
        return ["neither a JSON object nor an array"]
    slices: list[Slice] = []
    flows: dict[tuple[str, str, Any], dict[str, tuple[int, int, int, str | None]]] = {}
    for i, e in enumerate(events):
        where = f"event {i}"
        if not isinstance(e, dict):
            problems.append(f"{where}: not an object")
            continue
        ph = e.get("ph")
        if ph not in _PHASES:
            problems.append(f"{where}: unknown ph {ph!r}")
            continue
        for k in ("pid", "tid"):
            if k in e and (isinstance(e[k], bool) or not isinstance(e[k], int)):
                problems.append(f"{where}: {k} is not an integer")
        if ph != "M":
            try:
                ts = to_ns(e.get("ts"))
            except TypeError:
                problems.append(f"{where}: ts missing or not a number")
                continue
            if not isinstance(e.get("name"), str):
                problems.append(f"{where}: name missing")
        if ph == "X":
            try:
                dur = to_ns(e.get("dur"))
            except TypeError:
                problems.append(f"{where}: X without a numeric dur")
                continue
            if dur < 0:
                problems.append(f"{where}: negative dur")
            slices.append(Slice(e.get("pid", 0), e.get("tid", 0), ts, dur, e.get("name", ""),
                                e.get("cat", ""), e.get("args", {})))
        elif ph == "C":
            args = e.get("args")
            if not isinstance(args, dict) or not args or not all(
                    isinstance(v, (int, Decimal)) and not isinstance(v, bool) for v in args.values()):
                problems.append(f"{where}: counter args must be numbers")
        elif ph in "iI":
            if e.get("s", "t") not in ("g", "p", "t"):
                problems.append(f"{where}: instant scope must be g, p or t")
        elif ph in "stf":
            if "id" not in e:
                problems.append(f"{where}: flow event without id")
                continue
            key = (e.get("cat", ""), e.get("name", ""), e["id"])
            flows.setdefault(key, {})[ph] = (e.get("pid", 0), e.get("tid", 0), ts, e.get("bp"))
        elif ph == "M":
            if e.get("name") not in ("process_name", "thread_name", "process_sort_index",
                                     "thread_sort_index", "process_labels"):
                problems.append(f"{where}: unknown metadata event {e.get('name')!r}")
            if not isinstance(e.get("args"), dict):
                problems.append(f"{where}: metadata event without args")
    problems += _nest(slices)
    problems += _check_flows(flows, slices)
    return problems


def _check_flows(flows: dict[tuple[str, str, Any], dict[str, tuple[int, int, int, str | None]]],
                 slices: Iterable[Slice]) -> list[str]:
    by_track: dict[tuple[int, int], list[Slice]] = {}
    for s in slices:
        by_track.setdefault((s.pid, s.tid), []).append(s)

    def inside(pid: int, tid: int, ts: int) -> bool:
        return any(s.ts <= ts < s.end for s in by_track.get((pid, tid), ()))

    problems: list[str] = []
    for key, ends in flows.items():
        if "s" not in ends or "f" not in ends:
            problems.append(f"flow {key}: has {sorted(ends)} only, needs s and f")
            continue
        pid, tid, ts, _ = ends["s"]
        if not inside(pid, tid, ts):
            problems.append(f"flow {key}: start at {ts} ns is inside no slice of track {(pid, tid)}")
        pid, tid, ts, bp = ends["f"]
        if bp == "e" and not inside(pid, tid, ts):
            problems.append(f"flow {key}: end at {ts} ns is inside no slice of track {(pid, tid)}")
        if ends["f"][2] < ends["s"][2]:
            problems.append(f"flow {key}: ends before it starts")
    return problems


# ------------------------------------------------------------ counterexamples
def write_counterexample(w: TraceWriter, ex: Any, schedule: Any, title: str | None = None) -> int:
    """The failing (or any) execution ``ex`` of the explorer, replayed from
    ``schedule``, as one process: a track per actor (a task, named with its
    CPU, and the RCU callback processor), a slice per step (one step = one
    µs: the schedule has no physical time), the violating step named ``!!``
    and marked with an instant, preemptions marked ``>>``; a ``schedule``
    track whose one slice is named by the replay command (a violation found
    after the last step, by the scenario's final check, is an instant at
    its end).  Returns the pid."""
    scen = ex.scenario.name
    pid = w.process(title or f"counterexample: {scen}")
    actors: list[int] = sorted({a for a, _ in ex.trace} | set(range(len(ex.tasks))))
    for a in actors:
        if a == ex.rcu_actor:
            w.thread(pid, a + 1, "rcu callbacks", sort=a + 1)
        else:
            t = ex.tasks[a]
            w.thread(pid, a + 1, f"cpu{t.cpu.id}: {t.name}", sort=a + 1)
    f = ex.failure
    failed_at = f.step - 1 if f is not None and f.actor is not None else -1
    pre = set(ex.preempted_at)
    for i, (actor, op) in enumerate(ex.trace):
        text = op.describe()
        args: dict[str, Any] = {"step": i}
        name = text
        if i in pre:
            args["preempted"] = True
            name = ">> " + text
        if i == failed_at:
            name = "!! " + text
            args["violation"] = f"{f.kind}: {f.message}"
            if f.site:
                args["model code"] = f.site
        w.slice(pid, actor + 1, i * STEP_NS, STEP_NS, name, "violation" if i == failed_at else "op", args)
        if i in pre:
            w.instant(pid, actor + 1, i * STEP_NS, "preemption", "schedule",
                      {"step": i, "previous actor could have gone on": True})
    end = max(1, len(ex.trace)) * STEP_NS
    line = str(schedule)
    cmd = schedule.replay_command()
    sched_tid = max(actors, default=0) + 2
    w.thread(pid, sched_tid, "schedule", sort=sched_tid)
    w.slice(pid, sched_tid, 0, end, f"replay: {cmd}", "schedule",
            {"schedule": line, "replay": cmd, "steps": len(ex.trace), "preemptions": ex.preemptions})
    if f is not None:
        # a step that failed, or (a property checked at the end) the end of the run
        tid, at = (f.actor + 1, failed_at * STEP_NS) if failed_at >= 0 else (sched_tid, end - 1)
        w.instant(pid, tid, at, f"VIOLATION {f.kind}", "violation",
                  {"message": f.message, "step": failed_at if failed_at >= 0 else "after the last step"})
    entry = {"pid": pid, "scenario": scen, "schedule": line, "replay": cmd,
             "steps": len(ex.trace), "preemptions": ex.preemptions,
             "violation": None if f is None else {"kind": f.kind, "message": f.message,
                                                   "step": failed_at, "site": f.site},
             "time axis": "one step = 1 µs (schedules have no physical time)"}
    w.metadata.setdefault("counterexamples", []).append(entry)
    return pid
