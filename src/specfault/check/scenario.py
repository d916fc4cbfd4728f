"""Scenarios: what the explorer runs.

A :class:`Scenario` is a *setup* that builds fresh shared state, the
*threads* that run on it (coroutine factories, one task each, each on its
own CPU unless told), and the *properties* to check: an ``invariant`` after
every step and a ``check`` at the end.  A property passes by returning None
or True; it fails by returning False or a message, or by raising
``AssertionError`` or a ``ModelBug``.  ``observe`` (optional) maps the final
state to a hashable value: exhaustive strategies collect the set of final
observations, which is how the reduction's soundness is tested.

The explorer builds an :class:`Env` per execution — the CPUs and one RCU
domain — and hands it to ``setup``; setup may replace ``env.cpus`` and
``env.rcu`` with its machine's own.  A scenario whose setup is costly
(a whole machine, built with the public API) sets ``snapshot``: the world
is then built once and restored in place before each execution
(``runtime/fast.py``'s :class:`~specfault.runtime.fast.WorldPool`), which
gives the same executions as a build per execution.  The explorer runs "process one RCU
callback whose grace period ended" as a schedulable choice of its own, so
callback timing is explored like any other interleaving.

Scenarios that should be replayable from the command line are registered by
name (:func:`register`); ``"module:attr"`` names an attribute holding a
scenario (or a zero-argument function returning one), and so does
``"path/to/file.py:attr"``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

from specfault.runtime.fast import WorldPool
from specfault.sync.cpu import Cpu
from specfault.sync.rcu import Rcu

Property = Callable[[Any], Any]


@dataclass
class Thread:
    """One task of a scenario: ``fn(state)`` returns its coroutine."""

    name: str
    fn: Callable[[Any], Coroutine[Any, Any, Any]]
    #: CPU index in ``env.cpus`` (default: the thread's index)
    cpu: int | None = None
    #: ``mm(state)`` gives the task's mm (``Task.mm``), if the model needs it
    mm: Callable[[Any], Any] | None = None


@dataclass
class Env:
    """Per-execution machine: CPUs and the RCU domain."""

    cpus: list[Cpu]
    rcu: Rcu | None
    #: ``spawn(name, coro, mm=None) -> Task``: create a task while running,
    #: set by a driver that can (the explorer: ``Execution.spawn``)
    spawn: Callable[..., Any] | None = None

    def use_rcu(self, rcu: Rcu) -> None:
        """Replace the RCU domain (e.g. by a machine's own or a mutant)."""
        self.rcu = rcu
        for cpu in self.cpus:
            cpu.rcu = rcu


@dataclass
class Scenario:
    name: str
    setup: Callable[[Env], Any]
    threads: list[Thread]
    #: checked once every task finished (and RCU callbacks drained)
    check: Property | None = None
    #: checked after every step
    invariant: Property | None = None
    #: final state -> hashable observation (exhaustive runs collect the set)
    observe: Callable[[Any], Hashable] | None = None
    #: number of CPUs (default: one per thread)
    cpus: int | None = None
    #: build an RCU domain and schedule its callbacks as choices
    rcu: bool = True
    #: report tasks that finish holding locks / in RCU / irqs off
    check_exit: bool = True
    #: run the lockdep validator for this scenario (and ExploreConfig.lockdep)
    lockdep: bool = True
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: ``clock(state)``: a value that code *between* ops changes (the mm
    #: scenarios' real-time clock, read by the linearizability check).  The
    #: reductions (``dpor``) treat the steps that change it as dependent on
    #: each other, so every order of them stays explored.
    clock: Callable[[Any], Hashable] | None = None
    #: build the world once and restore a snapshot of it before each
    #: execution, instead of running ``setup`` for each (see the module doc)
    snapshot: bool = False
    _pool: WorldPool | None = field(default=None, init=False, repr=False, compare=False)

    def make_env(self) -> Env:
        rcu = Rcu() if self.rcu else None
        n = self.cpus if self.cpus is not None else len(self.threads)
        return Env([Cpu(i, rcu) for i in range(max(n, 1))], rcu)

    def build_world(self) -> tuple[Env, Any]:
        """A new env and the state ``setup`` builds on it."""
        env = self.make_env()
        return env, self.setup(env)

    def world(self, owner: Any) -> tuple[Env, Any]:
        """The env and state for one execution, ``owner``: built by
        :meth:`build_world`, or with ``snapshot`` a pooled world restored to
        its initial state, lent to ``owner`` until it is garbage."""
        if not self.snapshot:
            return self.build_world()
        pool = self._pool
        if pool is None:
            pool = self._pool = WorldPool(self.build_world)
        world: tuple[Env, Any] = pool.acquire(owner)
        return world


_REGISTRY: dict[str, Callable[[], Scenario]] = {}


def register(name: str, factory: Callable[[], Scenario]) -> None:
    """Make ``name`` resolvable by :func:`lookup` (and the CLI's --replay)."""
    _REGISTRY[name] = factory


def registered() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


#: modules whose import registers scenarios (absent ones are skipped)
BUILTIN = ("specfault.check.litmus", "specfault.check.scenarios")


def _load_builtin() -> None:
    for name in BUILTIN:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


class UnknownScenario(KeyError):
    """A name :func:`lookup` cannot resolve; the message says why (and
    offers a few close matches, never the whole registry)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown scenario"


def _import(mod: str) -> Any:
    """``mod`` is a module name, or a ``.py`` file: imported by its module
    name when it lies under a ``sys.path`` entry (so a schedule names it
    the same way), else loaded from the file as a module named by its path
    (a program's default name then is ``path.py:attr``)."""
    if not mod.endswith(".py"):
        return importlib.import_module(mod)
    import pathlib
    import sys

    path = pathlib.Path(mod)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {mod}")
    full = path.resolve()
    for entry in sys.path:
        try:
            rel = full.relative_to(pathlib.Path(entry or ".").resolve())
        except ValueError:
            continue
        parts = rel.with_suffix("").parts
        if all(p.isidentifier() for p in parts):
            try:
                found = importlib.util.find_spec(".".join(parts))
            except (ImportError, ValueError):
                found = None
            if found is not None and found.origin and pathlib.Path(found.origin).resolve() == full:
                return importlib.import_module(".".join(parts))
    if mod in sys.modules:
        return sys.modules[mod]
    spec = importlib.util.spec_from_file_location(mod, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {mod}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod] = module          # named by its path: replay lines resolve it again
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod]
        raise
    return module


def lookup(name: str) -> Scenario:
    """The scenario called ``name``: registered, or ``module:attr``.
    Raises :class:`UnknownScenario` (a KeyError)."""
    import difflib

    _load_builtin()
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if ":" in name:
        mod, _, attr = name.rpartition(":") if name.count(":") > 1 else name.partition(":")
        try:
            module = _import(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure means: no such scenario
            raise UnknownScenario(f"scenario {name!r}: cannot import module {mod!r} "
                                  f"({type(exc).__name__}: {exc})") from None
        if not hasattr(module, attr):
            raise UnknownScenario(f"scenario {name!r}: module {mod!r} has no attribute {attr!r}")
        obj = getattr(module, attr)
        if callable(obj) and not isinstance(obj, Scenario):
            obj = obj()
        if isinstance(obj, Scenario):
            return obj
        raise UnknownScenario(f"scenario {name!r}: {mod}.{attr} is not a Scenario "
                              f"(nor a function returning one)")
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownScenario(f"unknown scenario {name!r}{hint}; 'specfault check --list' lists them")
