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

import heapq
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
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

    def __init__(self, done: dict[Any, Any], running: list[Any],
                 partial: dict[Any, Any] | None = None) -> None:
        super().__init__()
        self.done = done
        self.running = running
        self.partial = partial or {}


@dataclass
class Backend:
    """Where units run: ``jobs`` local processes (None or 1: in this
    process), or Ray (``backend="ray"``, optionally at ``address``; ``jobs``
    then caps the units running at once, default: the cluster's CPUs)."""

    backend: str = "local"
    jobs: int | None = None
    address: str | None = None
    #: units running or finished-but-not-yet-handed-back, at most (None: 2 x workers)
    in_flight: int | None = None

    def __post_init__(self) -> None:
        check_backend(self.backend, self.jobs, self.address)
        if self.in_flight is not None and self.in_flight < 1:
            raise ValueError(f"in_flight: must be at least 1, not {self.in_flight}")

    @property
    def serial(self) -> bool:
        return self.backend == "local" and (self.jobs or 1) == 1

    def describe(self) -> str:
        if self.backend == "ray":
            return f"ray ({self.address or 'a local instance'})"
        return "1 process" if self.serial else f"{self.jobs} local processes"


def check_backend(backend: str, jobs: int | None = None, address: str | None = None) -> None:
    """Raise ValueError (naming the argument) for a backend that cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, not {backend!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int)
                             or not 1 <= jobs <= MAX_JOBS):
        raise ValueError(f"jobs: must be in 1..{MAX_JOBS}, not {jobs!r}")
    if address is not None and backend != "ray":
        raise ValueError("address: only used with backend 'ray'")
    if backend == "ray" and not ray_available():
        raise ValueError("backend: ray is not installed (pip install 'specfault[ray]')")


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def map_units(fn: Callable[[U], R], units: Iterable[U], *, jobs: int | None = None,
              backend: str = "local", address: str | None = None, in_flight: int | None = None,
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


Key = tuple[int, ...]


class _Pause:
    """The type of :data:`PAUSE`."""

    def __repr__(self) -> str:
        return "PAUSE"


#: yielded by a campaign's source: no unit until the caller has the results
#: of every unit read so far (see :class:`Campaign`)
PAUSE = _Pause()


class Campaign:
    """The units of one campaign, run by one backend.

    Iterate it for ``(index, result)`` in index order.  Use it as a context
    manager, so that leaving early (an exception, Ctrl-C anywhere in the
    block) stops the workers and a ``KeyboardInterrupt`` becomes
    :class:`CampaignInterrupted`; results recorded with :meth:`handed_back`
    are included in its ``done`` (``map_units`` does that).

    ``units`` may be any iterable, even an endless one: it is read lazily,
    as the window allows.  **A source that waits for results**: an iterable
    may yield :data:`PAUSE` — "no unit until the results handed out so far
    are merged" — when its next units depend on the results (a fuzzer's
    next batch is drawn from the corpus the last batch grew).  The campaign
    asks again once every unit read so far has been yielded to the caller
    (and the caller has run its loop body on each), at once if they all
    were already; a source that pauses twice in a row with nothing
    outstanding raises :class:`RuntimeError` (nothing could wake it).

    **Units that split** (``expand=True``): ``fn(unit)`` returns
    ``(result, children)``; the children are units too, run after it in the
    campaign's order.  Keys are then tuples: unit ``i`` of ``units`` is
    ``(i,)``, child ``j`` of the unit with key ``k`` is ``k + (j,)``, and
    iteration yields ``(key, result)`` in lexicographic key order — a unit
    before its children, its children before its next sibling (depth-first
    order of the tree of units).  A search that splits its remaining work
    into pieces in its own order therefore gets its results back in that
    order whoever ran them (``check/split.py``).  :meth:`drop` abandons
    every unit under a key (e.g. the rest of a search that found a failure).
    ``child_key(parent key, j, child)`` places a child elsewhere in the
    order (a key that sorts after its parent's and starts with the same
    top-level index): an iterative search puts the work it defers to a
    higher bound after all the work of the lower bounds.
    """

    def __init__(self, fn: Callable[[Any], Any], units: Iterable[Any], *, jobs: int | None = None,
                 backend: str = "local", address: str | None = None, in_flight: int | None = None,
                 progress: Callable[[Any, Any], None] | None = None, expand: bool = False,
                 child_key: Callable[[Key, int, Any], Key] | None = None) -> None:
        self.backend = Backend(backend, jobs, address, in_flight)
        self.fn = fn
        self.expand = expand
        self.child_key = child_key
        self.progress = progress
        self._source = iter(units)
        self._source_done = False
        #: units read from the source (the next one's index)
        self._read = 0
        #: the source yielded PAUSE: not asked again until nothing is open
        self._paused = False
        #: keys not yet submitted (a heap) and their units
        self._todo: list[Key] = []
        self._units: dict[Key, Any] = {}
        #: every key not yet yielded (a heap; includes running and done ones)
        self._open: list[Key] = []
        #: finished, not yet yielded (key -> result)
        self.done: dict[Key, Any] = {}
        #: yielded and recorded with handed_back (key -> result)
        self.kept: dict[Key, Any] = {}
        #: running now
        self.running: set[Key] = set()
        #: the in-process backend's interrupted unit's own report (key -> exc.result)
        self.partial: dict[Key, Any] = {}
        self._dropped: list[Key] = []
        self._last: Key | None = None
        self._stop: Callable[[], None] = lambda: None
        self._gen: Generator[tuple[Any, Any], None, None] | None = None

    # -- the caller's side --

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    def handed_back(self, result: Any) -> None:
        """Record the result just yielded as the caller's (for ``done`` on Ctrl-C)."""
        if self._last is not None:
            self.kept[self._last] = result

    def drop(self, key: Any) -> None:
        """Abandon every unit whose key starts with ``key`` (an index or a
        key tuple): not submitted, not yielded; running ones are let finish
        (a unit is bounded work) and their results and children discarded."""
        k = (key,) if isinstance(key, int) else tuple(key)
        self._dropped.append(k)
        for t in [t for t in self._units if t[:len(k)] == k]:
            del self._units[t]
        self._todo = [t for t in self._todo if t[:len(k)] != k]
        heapq.heapify(self._todo)
        self._open = [t for t in self._open if t[:len(k)] != k]
        heapq.heapify(self._open)
        for t in [t for t in self.done if t[:len(k)] == k]:
            del self.done[t]

    def open_under(self, key: Any) -> bool:
        """Whether some unit under ``key`` (an index or a key tuple) is not
        yet yielded: known units only — children appear when their parent
        finishes, before the parent is yielded."""
        k = (key,) if isinstance(key, int) else tuple(key)
        return any(t[:len(k)] == k for t in self._open)

    def stop(self) -> None:
        """Kill whatever runs (idempotent)."""
        stop, self._stop = self._stop, lambda: None
        stop()
        if self._gen is not None:
            self._gen.close()

    def interrupted(self) -> CampaignInterrupted:
        self.stop()
        done = {self._public(k): v for k, v in self.kept.items()}
        done.update((self._public(k), v) for k, v in self.done.items())
        return CampaignInterrupted(done, sorted(self._public(k) for k in self.running),
                                   {self._public(k): v for k, v in self.partial.items()})

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, CampaignInterrupted):
            if hasattr(exc, "result") and self.backend.serial and len(self.running) == 1:
                self.partial[next(iter(self.running))] = exc.result
            raise self.interrupted() from None
        self.stop()

    # -- the scheduler --

    def _public(self, key: Key) -> Any:
        return key if self.expand else key[0]

    def _is_dropped(self, key: Key) -> bool:
        return any(key[:len(k)] == k for k in self._dropped)

    def _pull(self) -> None:
        """Read one more unit from the source, if any (not while it pauses:
        see the class doc)."""
        if self._source_done:
            return
        if self._paused and self._open:
            return
        self._paused = False
        for resumed in (False, True):
            try:
                unit = next(self._source)
            except StopIteration:
                self._source_done = True
                return
            if unit is not PAUSE:
                self._add((self._read,), unit)
                self._read += 1
                return
            if self._open:              # results to wait for
                self._paused = True
                return
            if resumed:                 # every result is in: a second PAUSE waits forever
                raise RuntimeError("campaign: the source paused twice with every result handed back")

    def _add(self, key: Key, unit: Any) -> None:
        self._units[key] = unit
        heapq.heappush(self._todo, key)
        heapq.heappush(self._open, key)

    def _next_unit(self, window: int) -> tuple[Key, Any] | None:
        """The lowest key not yet submitted, if the window allows (the
        lowest key still open always may: the campaign must progress)."""
        if not self._todo:
            self._pull()
        if not self._todo:
            return None
        key = self._todo[0]
        if len(self.running) + len(self.done) >= window and key != self._open[0]:
            return None
        heapq.heappop(self._todo)
        self.running.add(key)
        return key, self._units.pop(key)

    def _finished(self, key: Key, value: Any) -> None:
        self.running.discard(key)
        if self._is_dropped(key):
            return
        if self.expand:
            value, children = value
            for j, child in enumerate(children):
                self._add(key + (j,) if self.child_key is None else self.child_key(key, j, child), child)
        self.done[key] = value
        if self.progress is not None:
            self.progress(self._public(key), value)

    def _ready(self) -> Iterator[tuple[Any, Any]]:
        while True:
            if not self._open and not self._todo:
                self._pull()
            if not self._open or self._open[0] not in self.done:
                return
            key = heapq.heappop(self._open)
            self._last = key
            yield self._public(key), self.done.pop(key)

    def _more(self) -> bool:
        if not self._open:
            self._pull()
        return bool(self._open)

    def _run(self) -> Generator[tuple[Any, Any], None, None]:
        be = self.backend
        if be.backend == "ray":
            yield from self._ray()
        elif be.serial:
            yield from self._serial()
        else:
            yield from self._processes()

    # -- in this process --

    def _serial(self) -> Generator[tuple[Any, Any], None, None]:
        while self._more():
            nxt = self._next_unit(1)
            assert nxt is not None
            key, unit = nxt
            self._finished(key, self.fn(unit))
            yield from self._ready()

    # -- local worker processes --

    def _processes(self) -> Generator[tuple[Any, Any], None, None]:
        n = self.backend.jobs or 1
        window = _window(self.backend, n)
        pool: _Pool | None = None
        try:
            while self._more():
                if pool is None:
                    pool = _Pool(self.fn, n)
                    self._stop = pool.kill
                while pool.has_room():        # a unit to every idle worker, within the window
                    nxt = self._next_unit(window)
                    if nxt is None:
                        break
                    w = pool.idle()
                    assert w is not None
                    pool.conns[w].send(nxt)
                    pool.busy[w] = nxt[0]
                ready = wait([pool.conns[w] for w in pool.busy]
                             + [pool.procs[w].sentinel for w in pool.busy])
                for w in list(pool.busy):
                    conn, proc = pool.conns[w], pool.procs[w]
                    if conn in ready or (proc.sentinel in ready and conn.poll()):
                        try:
                            key, ok, value = conn.recv()
                        except EOFError:
                            raise UnitFailed(self._public(pool.busy[w]), _died(proc)) from None
                        del pool.busy[w]
                        if not ok:
                            raise UnitFailed(self._public(key), value)
                        self._finished(key, value)
                    elif proc.sentinel in ready:
                        raise UnitFailed(self._public(pool.busy[w]), _died(proc))
                yield from self._ready()
        except BaseException:
            if pool is not None:
                pool.kill()
            raise
        self._stop = lambda: None
        if pool is not None:
            pool.close()

    # -- Ray --

    def _ray(self) -> Generator[tuple[Any, Any], None, None]:
        import ray

        ray_init(self.backend.address)
        workers = self.backend.jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        window = _window(self.backend, workers)
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        fn_ref = ray.put(self.fn)
        pending: dict[Any, Key] = {}        # object ref -> key
        self._stop = lambda: _ray_cancel(pending)
        while self._more():
            while len(pending) < workers:
                nxt = self._next_unit(window)
                if nxt is None:
                    break
                pending[remote.remote(fn_ref, nxt[1])] = nxt[0]
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL)
            for ref in ready:
                key = pending.pop(ref)
                ok, value = ray.get(ref)
                if not ok:
                    raise UnitFailed(self._public(key), value)
                self._finished(key, value)
            yield from self._ready()
        self._stop = lambda: None


def _died(proc: Any) -> str:
    proc.join(1.0)
    return (f"worker process died (exit code {proc.exitcode}); a script that starts a campaign "
            "must guard it with if __name__ == '__main__' (workers are spawned)")


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
        key, unit = msg
        try:
            conn.send((key, True, fn(unit)))
        except BaseException:                      # noqa: BLE001 - reported to the parent
            conn.send((key, False, traceback.format_exc()))


class _Pool:
    """Up to ``n`` spawned worker processes, one pipe each, one unit at a
    time each; a worker is started when a unit finds none idle (a campaign
    of one unit starts one)."""

    def __init__(self, fn: Callable[[Any], Any], n: int) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.fn, self.n = fn, n
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.busy: dict[int, Key] = {}            # worker -> unit key

    def has_room(self) -> bool:
        return len(self.busy) < self.n

    def idle(self) -> int | None:
        """An idle worker (started if need be and allowed), or None."""
        for w in range(len(self.procs)):
            if w not in self.busy:
                return w
        if len(self.procs) >= self.n:
            return None
        # born ignoring SIGINT (an ignored signal stays ignored across exec, and
        # Python then installs no KeyboardInterrupt handler): a Ctrl-C while a
        # worker still imports must not print its traceback
        try:
            saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:                         # not the main thread: nothing to protect
            saved = None
        try:
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(target=_worker, args=(child, self.fn), daemon=True)
            p.start()
            child.close()
        finally:
            if saved is not None:
                signal.signal(signal.SIGINT, saved)
        self.procs.append(p)
        self.conns.append(parent)
        return len(self.procs) - 1

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
    if address is None:       # a local instance: its workers import the driver's specfault
        opts["runtime_env"] = {"env_vars": {"PYTHONPATH": _driver_path()}}
    opts.update(kwargs)
    if address is not None:
        opts["address"] = address
    ray.init(**opts)


def ray_stop(fast: bool = False) -> None:
    """Disconnect from Ray; a local instance this process started is shut
    down.  ``fast`` (after Ctrl-C): its processes are killed without the
    grace period Ray gives them (about 2 s in all, which would break the
    one-second promise); a cluster is only disconnected from, either way."""
    import ray

    if not ray.is_initialized():
        return
    if fast:
        try:                          # ray's own node handle; if it moves, the slow path
            from ray._private import worker

            node = worker._global_node
            if node is not None:
                kill = node.kill_all_processes
                node.kill_all_processes = lambda **kw: kill(check_alive=False, allow_graceful=False,
                                                            wait=False)
        except (ImportError, AttributeError):
            pass
    ray.shutdown()


def _driver_path() -> str:
    """PYTHONPATH for local workers: the directory this specfault was
    imported from (``.../src`` of a checkout) first, then the driver's own
    PYTHONPATH."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(paths))


def _ray_call(fn: Callable[[Any], Any], unit: Any) -> tuple[bool, Any]:
    try:
        return True, fn(unit)
    except Exception:                              # noqa: BLE001 - reported to the parent
        return False, traceback.format_exc()


def _ray_cancel(pending: dict[Any, Key]) -> None:
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
