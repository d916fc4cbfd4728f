"""Campaigns: farm independent work units out, merge the results in order.

One function, three backends::

    from specfault.check.campaign import Campaign, map_units

    results = map_units(fn, units)                          # in this process, one after another
    results = map_units(fn, units, jobs=4)                  # 4 local worker processes
    results = map_units(fn, units, backend="ray")           # Ray (a local instance)
    results = map_units(fn, units, backend="ray", address="10.0.0.1:6379")   # an existing cluster

``fn(unit)`` must be a deterministic function of its unit (seeds inside the
unit, no clocks): then the results are the same whichever backend runs
them, because they are **merged by unit index, never by completion
order** — ``map_units`` returns ``[fn(u) for u in units]``; iterating a
:class:`Campaign` (a context manager) yields ``(index, result)`` pairs in
index order as soon as the lowest outstanding unit is done.  Any report built from them (the kill table, the
verdicts) is therefore identical to one local process.

What crosses a process boundary is pickled: with ``jobs > 1`` or Ray,
``fn`` must be a module-level function (workers import it by name, the
``spawn`` start method is used so nothing is inherited from the parent's
memory) and the units and results must pickle.  On Ray the workers must be
able to import ``specfault`` at the same version (``docs/campaigns.md``).

Memory is bounded: at most ``in_flight`` units (default: twice the
workers, at least 2) are submitted beyond the lowest unit not yet handed
back, so a slow unit holds back new submissions instead of letting finished
results pile up; a worker process runs one unit at a time.

Progress: ``progress(index, result)`` is called in the parent as each unit
finishes (in completion order; use it for a bar, never for the result).

Ctrl-C (``KeyboardInterrupt`` in the parent): the workers are killed (local
processes: SIGKILL after a short SIGTERM grace; Ray: ``ray.cancel(force=True)``
on every task in flight) and :class:`CampaignInterrupted` is raised — still
a ``KeyboardInterrupt`` — carrying every result finished so far
(``done``, by index), the indices that were running (``running``) and, for
the in-process backend, what the interrupted unit itself reported when it
raised an exception with a ``result`` attribute (``partial``; e.g.
:class:`specfault.check.explore.Interrupted`).  Worker processes ignore
SIGINT: the parent alone decides, so a terminal's Ctrl-C (sent to the
whole process group) never leaves a half-written result in a pipe.

A unit that raises in a worker raises :class:`UnitFailed` in the parent,
naming the unit index and carrying the worker's traceback; a worker process
that dies (killed, out of memory) does the same.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

U = TypeVar("U")
R = TypeVar("R")

BACKENDS = ("local", "ray")
#: the largest --jobs accepted
MAX_JOBS = 1024
#: how often (seconds) a waiting parent wakes up to notice Ctrl-C on Ray
_POLL = 0.1


class UnitFailed(RuntimeError):
    """A unit raised (or its worker died); ``index`` names it, ``remote``
    is the worker's traceback text."""

    def __init__(self, index: int, remote: str) -> None:
        super().__init__(f"campaign unit {index} failed:\n{remote}")
        self.index = index
        self.remote = remote


class CampaignInterrupted(KeyboardInterrupt):
    """Ctrl-C during a campaign: what was finished (``done``: index ->
    result), what was running (``running``: indices, ascending) and, from
    the in-process backend, the interrupted unit's own partial report
    (``partial``: index -> the ``result`` attribute of the exception it
    raised)."""

    def __init__(self, done: dict[int, Any], running: list[int],
                 partial: dict[int, Any] | None = None) -> None:
        super().__init__()
        self.done = done
        self.running = running
        self.partial = partial or {}


@dataclass
class Backend:
    """Where units run: ``jobs`` local processes (1: in this process), or
    Ray (``backend="ray"``, optionally at ``address``)."""

    backend: str = "local"
    jobs: int = 1
    address: str | None = None
    #: units submitted beyond the lowest one not yet handed back (None: 2 x workers)
    in_flight: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_backend(self.backend, self.jobs, self.address)

    @property
    def serial(self) -> bool:
        return self.backend == "local" and self.jobs == 1

    def describe(self) -> str:
        if self.backend == "ray":
            return f"ray ({self.address or 'local instance'})"
        return "1 process" if self.jobs == 1 else f"{self.jobs} local processes"


def check_backend(backend: str, jobs: int = 1, address: str | None = None) -> None:
    """Raise ValueError (naming the argument) for a backend that cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, not {backend!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs: must be in 1..{MAX_JOBS}, not {jobs!r}")
    if address is not None and backend != "ray":
        raise ValueError("address: only used with backend 'ray'")
    if backend == "ray" and not ray_available():
        raise ValueError("backend: ray is not installed (pip install 'specfault[ray]')")


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def map_units(fn: Callable[[U], R], units: Iterable[U], *, jobs: int = 1, backend: str = "local",
              address: str | None = None, in_flight: int | None = None,
              progress: Callable[[int, R], None] | None = None) -> list[R]:
    """``[fn(u) for u in units]``, computed by the chosen backend (see the
    module's docstring).  Ctrl-C raises :class:`CampaignInterrupted` with
    every result finished so far in ``done``."""
    out: list[R] = []
    with Campaign(fn, units, jobs=jobs, backend=backend, address=address, in_flight=in_flight,
                  progress=progress) as run:
        for _, res in run:
            out.append(res)
            run.handed_back(res)
    return out


class Campaign:
    """The units of one campaign, run by one backend.  Iterate it for
    ``(index, result)`` in index order; use it as a context manager so that
    leaving early (an exception, Ctrl-C anywhere in the block) stops the
    workers, and a ``KeyboardInterrupt`` becomes :class:`CampaignInterrupted`.
    Results handed back through :meth:`handed_back` are included in its
    ``done`` (``map_units`` does that; a streaming caller keeps its own)."""

    def __init__(self, fn: Callable[[U], R], units: Iterable[U], *, jobs: int = 1,
                 backend: str = "local", address: str | None = None, in_flight: int | None = None,
                 progress: Callable[[int, R], None] | None = None) -> None:
        self.backend = Backend(backend, jobs, address, in_flight)
        self.fn = fn
        self.items: list[Any] = list(units)
        self.progress = progress
        #: finished, not yet yielded (index -> result)
        self.done: dict[int, Any] = {}
        #: yielded and recorded with handed_back (index -> result)
        self.kept: dict[int, Any] = {}
        #: running now (index); the in-process backend's interrupted unit's own report
        self.running: set[int] = set()
        self.partial: dict[int, Any] = {}
        self.out = 0                      # next index to yield
        self._stop: Callable[[], None] = lambda: None
        self._gen: Generator[tuple[int, Any], None, None] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if self._gen is None:
            be = self.backend
            self._gen = (self._ray() if be.backend == "ray" else self._serial() if be.jobs == 1
                         else self._processes())
        return self._gen

    def handed_back(self, result: Any) -> None:
        self.kept[self.out - 1] = result

    def stop(self) -> None:
        """Kill whatever runs (idempotent)."""
        stop, self._stop = self._stop, lambda: None
        stop()
        if self._gen is not None:
            self._gen.close()

    def interrupted(self) -> CampaignInterrupted:
        self.stop()
        done = dict(self.kept)
        done.update(self.done)
        return CampaignInterrupted(done, sorted(self.running), self.partial)

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.stop()
            return
        if isinstance(exc, CampaignInterrupted):
            self.stop()
            return
        if isinstance(exc, KeyboardInterrupt):
            if hasattr(exc, "result") and self.backend.serial and len(self.running) == 1:
                self.partial[next(iter(self.running))] = exc.result
            raise self.interrupted() from None
        self.stop()

    def _finished(self, index: int, value: Any) -> None:
        self.running.discard(index)
        self.done[index] = value
        if self.progress is not None:
            self.progress(index, value)

    def _ready(self) -> Iterator[tuple[int, Any]]:
        while self.out in self.done:
            res = self.done.pop(self.out)
            self.out += 1
            yield self.out - 1, res

    # -- in this process --

    def _serial(self) -> Generator[tuple[int, Any], None, None]:
        for i, unit in enumerate(self.items):
            self.running.add(i)
            res = self.fn(unit)
            self._finished(i, res)
            yield from self._ready()

    # -- local worker processes --

    def _processes(self) -> Generator[tuple[int, Any], None, None]:
        items = self.items
        n = min(self.backend.jobs, max(1, len(items)))
        window = _window(self.backend, n)
        pool = _Pool(self.fn, n)
        self._stop = pool.kill
        nxt = 0            # next unit to submit
        while self.out < len(items):
            for w in range(n):            # a unit to every idle worker, within the window
                if w not in pool.busy and nxt < len(items) and nxt < self.out + window:
                    pool.conns[w].send((nxt, items[nxt]))
                    pool.busy[w] = nxt
                    self.running.add(nxt)
                    nxt += 1
            ready = wait([pool.conns[w] for w in pool.busy]
                         + [pool.procs[w].sentinel for w in pool.busy])
            for w in list(pool.busy):
                conn, proc = pool.conns[w], pool.procs[w]
                if conn in ready or (proc.sentinel in ready and conn.poll()):
                    try:
                        index, ok, value = conn.recv()
                    except EOFError:
                        raise UnitFailed(pool.busy[w], "worker process died (exit code "
                                                       f"{proc.exitcode})") from None
                    del pool.busy[w]
                    if not ok:
                        raise UnitFailed(index, value)
                    self._finished(index, value)
                elif proc.sentinel in ready:
                    raise UnitFailed(pool.busy[w], f"worker process died (exit code {proc.exitcode})")
            yield from self._ready()
        self._stop = lambda: None
        pool.close()

    # -- Ray --

    def _ray(self) -> Generator[tuple[int, Any], None, None]:
        import ray

        items = self.items
        ray_init(self.backend.address)
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        window = _window(self.backend, workers)
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        fn_ref = ray.put(self.fn)
        pending: dict[Any, int] = {}        # object ref -> unit index
        self._stop = lambda: _ray_cancel(pending)
        nxt = 0
        while self.out < len(items):
            while nxt < len(items) and nxt < self.out + window:
                pending[remote.remote(fn_ref, items[nxt])] = nxt
                self.running.add(nxt)
                nxt += 1
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL)
            for ref in ready:
                index = pending.pop(ref)
                ok, value = ray.get(ref)
                if not ok:
                    raise UnitFailed(index, value)
                self._finished(index, value)
            yield from self._ready()
        self._stop = lambda: None


def _window(be: Backend, workers: int) -> int:
    return be.in_flight if be.in_flight is not None else max(2, 2 * workers)


# -- local worker processes --------------------------------------------------------------------

def _worker(conn: Connection, fn: Callable[[Any], Any]) -> None:
    """A worker process: run units sent on ``conn`` until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent decides (module docstring)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        index, unit = msg
        try:
            conn.send((index, True, fn(unit)))
        except BaseException:                      # noqa: BLE001 - reported to the parent
            conn.send((index, False, traceback.format_exc()))


class _Pool:
    """``n`` spawned worker processes, one pipe each, one unit at a time each."""

    def __init__(self, fn: Callable[[Any], Any], n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.busy: dict[int, int] = {}            # worker -> unit index
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, fn), daemon=True)
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 0.5
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
        for c in self.conns:
            c.close()

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(5.0)
        self.kill()


# -- Ray -----------------------------------------------------------------------------------------

def ray_init(address: str | None = None, **kwargs: Any) -> None:
    """Connect to Ray once per process: ``address`` (an existing cluster,
    ``ray start --head`` prints it; "auto" finds a local one), else the
    instance already initialised, else a new local instance."""
    import ray

    if ray.is_initialized():
        return
    opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                            "configure_logging": False}
    opts.update(kwargs)
    if address is not None:
        opts["address"] = address
    ray.init(**opts)


def _ray_call(fn: Callable[[Any], Any], unit: Any) -> tuple[bool, Any]:
    try:
        return True, fn(unit)
    except Exception:                              # noqa: BLE001 - reported to the parent
        return False, traceback.format_exc()


def _ray_cancel(pending: dict[Any, int]) -> None:
    import ray

    for ref in pending:
        try:
            ray.cancel(ref, force=True)
        except Exception:                          # noqa: BLE001 - best effort, already done
            pass


def default_jobs() -> int:
    """The machine's CPUs available to this process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                         # not Linux
        return os.cpu_count() or 1
