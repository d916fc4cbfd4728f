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
``env.rcu`` with its machine's own.  The explorer runs "process one RCU
callback whose grace period ended" as a schedulable choice of its own, so
callback timing is explored like any other interleaving.

Scenarios that should be replayable from the command line are registered by
name (:func:`register`); ``"module:attr"`` names an attribute holding a
scenario (or a zero-argument function returning one).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

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
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: ``clock(state)``: a value that code *between* ops changes (the mm
    #: scenarios' real-time clock, read by the linearizability check).  The
    #: reductions (``dpor``) treat the steps that change it as dependent on
    #: each other, so every order of them stays explored.
    clock: Callable[[Any], Hashable] | None = None

    def make_env(self) -> Env:
        rcu = Rcu() if self.rcu else None
        n = self.cpus if self.cpus is not None else len(self.threads)
        return Env([Cpu(i, rcu) for i in range(max(n, 1))], rcu)


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


def lookup(name: str) -> Scenario:
    """The scenario called ``name``: registered, or ``module:attr``.
    Raises :class:`UnknownScenario` (a KeyError)."""
    import difflib

    _load_builtin()
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if ":" in name:
        mod, _, attr = name.partition(":")
        try:
            module = importlib.import_module(mod)
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
