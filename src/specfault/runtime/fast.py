"""Fast paths for the hottest ops.

In the direct driver an op object costs its construction plus a generator
for ``__await__`` (~0.5 us); a native coroutine call costs ~0.15 us.  These
helpers are coroutines that, when ``STATE.inline`` is set, do the op's work
on the spot, and otherwise await the real op object — so every other
driver still sees (and may interleave at) exactly the same op.

Use them on the fault path; everywhere else the op classes read better.
"""

from __future__ import annotations

import itertools
import sys
import types
import weakref
from collections import deque
from collections.abc import Callable, MutableSequence
from typing import Any

from specfault.runtime.ops import KObject, LoadItem, StoreItem, Work
from specfault.runtime.state import STATE, UseAfterFree


async def load_item(owner: KObject, slots: MutableSequence[Any], index: int) -> Any:
    """``await load_item(...)``: READ_ONCE(owner->slots[index]) — see
    :class:`LoadItem`; the direct driver does the load (and its
    use-after-free check) on the spot, every other driver gets the op."""
    if STATE.inline:
        if owner.freed_at is not None:
            raise UseAfterFree(owner, owner.freed_at, f"load [{index}]")
        return slots[index]
    return await LoadItem(owner, slots, index)


class _Done(tuple):  # type: ignore[type-arg]
    """An awaitable that is already complete with the value None: awaiting
    it runs no Python frame at all (``tuple.__iter__`` of an empty tuple
    stops at once).  What inline fast paths of None-valued ops return."""

    __slots__ = ()
    __await__ = tuple.__iter__


DONE: Any = _Done()


def store_item(owner: KObject, slots: MutableSequence[Any], index: int, value: Any) -> Any:
    """``await store_item(...)``: WRITE_ONCE(owner->slots[index], value) —
    see :class:`StoreItem`; done on the spot in the direct driver."""
    if STATE.inline:
        if owner.freed_at is not None:
            raise UseAfterFree(owner, owner.freed_at, f"store [{index}]")
        slots[index] = value
        return DONE
    return StoreItem(owner, slots, index, value)


def work(what: str, amount: int = 1) -> Any:
    """``await work(...)``: CPU work — see :class:`Work`; nothing to do in
    the direct driver."""
    if STATE.inline:
        return DONE
    return Work(what, amount)


# ------------------------------------------------------------- snapshots
#
# Why a world is restored in place instead of built again
# --------------------------------------------------------
# The explorer runs one schedule per execution, each on a world of its own
# (a machine, its processes, their VMAs, tables and pages) that the
# scenario's setup builds with the public API: a few hundred sequential
# steps of the model for a world of about a hundred objects.  On the
# memory-manager races the build was a third of each execution.
#
# The world an execution starts from is always the same, and an execution
# changes only what is reachable from it.  So the first build is kept:
# :class:`Snapshot` records, for every object reachable from the world, its
# contents (an instance's ``__dict__`` and slots, a list's items, a dict's
# entries, a cell's value...) as shallow copies, and :meth:`Snapshot.restore`
# writes them back in place.  Each object keeps its identity, so every
# reference between them is right again without being followed; an object
# the execution created becomes unreachable.  A restore is a few C-level
# copies per object: ~10 us where the build took ~150 us.
#
# What is left out, and what is refused
# -------------------------------------
# Objects the world merely *refers to* are not its own: classes, functions,
# modules, immutable atoms (ints, strings, bytes, ...), and whatever every
# build shares (a module's singleton, the configuration the scenario passed
# in): :class:`WorldPool` builds the world twice and leaves out of both
# snapshots the objects reachable from both (``shared``) — a build from
# scratch shares them too, so they carry over between executions exactly as
# before.  A few C types without in-place assignment are rebuilt at each
# restore from their snapshot (``itertools.count``: a new counter from the
# ``__reduce__`` recipe of the one recorded, so the next pid is the same in
# every execution).
# Anything else the rules do not cover — a C type with hidden state
# (``random.Random``, a generator, a weak reference, ``array``...) —
# raises :class:`SnapshotError` naming its type and a path to it from the
# root: a model object nobody taught the snapshot about fails loudly, never
# silently carries state from one execution to the next.  A Python class is
# covered as it is, whatever its fields (``__dict__`` and ``__slots__`` are
# read from the class, no per-class code): new kernel objects need nothing.
#
# The rules a world must follow: setup only creates (it does not reset or
# mutate shared objects), and every object whose state an execution may
# change is reachable from the roots.  ``tests/check/test_snapshot.py``
# checks, on every registered mm scenario, that executions on a restored
# world are the same as on one built from scratch.

#: immutable leaf types: never copied, never followed
_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis),
                    type(NotImplemented), types.CodeType, types.BuiltinFunctionType,
                    types.MethodWrapperType, types.WrapperDescriptorType,
                    types.MethodDescriptorType, types.GetSetDescriptorType,
                    types.MemberDescriptorType, types.ModuleType, type})
#: C types that cannot be assigned in place: rebuilt at every restore from
#: the ``__reduce__`` recipe of the object as it was (``count(5)``)
_REBUILT = frozenset({itertools.count})
#: builtin bases a Python class may derive from and still be covered (their
#: contents are restored as containers, their fields as instances)
_PLAIN_BASES = frozenset({object, list, dict, set, tuple, frozenset, int, str, bytes, float,
                          BaseException, Exception})
_HEAPTYPE = 1 << 9          # Py_TPFLAGS_HEAPTYPE: a class not built into the interpreter
_PYCLASS: dict[type, bool] = {}


def _python_class(cls: type) -> bool:
    """Was ``cls`` defined by a ``class`` statement in Python source?
    Extension modules' types are heap types too (``_random.Random``): what
    tells them apart is where they come from — a module with a ``.py``
    file (or ``__main__``)."""
    got = _PYCLASS.get(cls)
    if got is None:
        got = False
        if cls.__flags__ & _HEAPTYPE:
            name = getattr(cls, "__module__", None)
            mod = sys.modules.get(name) if isinstance(name, str) else None
            got = name == "__main__" or str(getattr(mod, "__file__", None) or "").endswith(".py")
        _PYCLASS[cls] = got
    return got
_UNSET = object()


class SnapshotError(TypeError):
    """An object reachable from a world that :class:`Snapshot` cannot restore."""


def _slot_descriptors(cls: type) -> list[Any]:
    """The member descriptors of every ``__slots__`` field of ``cls``."""
    out = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for name in slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"      # name mangling
            out.append(klass.__dict__[name])
    return out


_COVERED: dict[type, tuple[bool, list[Any]]] = {}


def _instance_layout(cls: type) -> tuple[bool, list[Any]]:
    """(has a ``__dict__``, its slot descriptors) for a Python class; raises
    :class:`SnapshotError` if a base is a C type with hidden state."""
    got = _COVERED.get(cls)
    if got is None:
        for klass in cls.__mro__:
            if not _python_class(klass) and klass not in _PLAIN_BASES:
                raise SnapshotError(cls, klass)
        has_dict = any("__dict__" in k.__dict__ for k in cls.__mro__ if _python_class(k))
        got = (has_dict, _slot_descriptors(cls))
        _COVERED[cls] = got
    return got


def _step(step: Any) -> str:
    """A field (``.name``) as is; an index, or a dict key (a 1-tuple), in brackets."""
    if isinstance(step, str):
        return step
    return f"[{step[0]!r}]" if isinstance(step, tuple) else f"[{step!r}]"


def _path(seen: dict[int, tuple[Any, int, Any]], key: int) -> str:
    """How the walk reached the object ``key``: ``root.machine.kernel...``."""
    parts: list[str] = []
    while key in seen:
        _, parent, step = seen[key]
        if parent == 0:
            break
        parts.append(_step(step))
        key = parent
    return "root" + "".join(reversed(parts))


def reachable(roots: Any, skip: frozenset[int] = frozenset(),
              strict: bool = True) -> dict[int, tuple[Any, int, Any]]:
    """Every object reachable from ``roots`` that a snapshot records, by id:
    (object, id of the object it was reached from, the field, index or key
    that leads to it).  Left out: atoms, classes, modules, code, the ids in
    ``skip``.  Functions and bound methods are followed into their
    closures, defaults and ``__self__`` without being recorded.  An object
    of a C type the snapshot cannot restore raises :class:`SnapshotError`
    (``strict``) or is recorded and not followed."""
    seen: dict[int, tuple[Any, int, Any]] = {}
    todo: list[tuple[Any, int, Any]] = [(roots, 0, "")]
    pop, push = todo.pop, todo.append
    while todo:
        obj, parent, step = pop()
        t = type(obj)
        key = id(obj)
        if t in _ATOMS or key in seen or key in skip or isinstance(obj, type):
            continue
        if t is types.FunctionType or t is types.MethodType:
            if t is types.MethodType:
                push((obj.__self__, parent, f"{_step(step)}.__self__"))
                obj = obj.__func__
            for i, cell in enumerate(obj.__closure__ or ()):
                push((cell, parent, f"{_step(step)}.<closure {i}>"))
            push((obj.__defaults__, parent, f"{_step(step)}.__defaults__"))
            push((obj.__kwdefaults__, parent, f"{_step(step)}.__kwdefaults__"))
            continue
        seen[key] = (obj, parent, step)
        heap = _python_class(t)
        if t is types.CellType:
            try:
                push((obj.cell_contents, key, ".cell_contents"))
            except ValueError:
                pass                       # an empty cell
            continue
        if t in _REBUILT or t is bytearray:
            continue
        if isinstance(obj, (list, tuple, deque)) and (heap or t in (list, tuple, deque)):
            for i, item in enumerate(obj):
                push((item, key, i))
        elif isinstance(obj, (set, frozenset)) and (heap or t in (set, frozenset)):
            for item in obj:
                push((item, key, "{...}"))
        elif isinstance(obj, dict) and (heap or t is dict):
            for k, v in obj.items():
                push((k, key, " key"))
                push((v, key, (k,)))
        elif not heap:
            if strict:
                raise SnapshotError(
                    f"cannot snapshot a {t.__module__}.{t.__qualname__} at {_path(seen, key)}: a C "
                    f"type whose state Python cannot see (runtime/fast.py lists what a world may hold)")
            continue
        if heap:
            try:
                has_dict, slots = _instance_layout(t)
            except SnapshotError as exc:
                if strict:
                    raise SnapshotError(
                        f"cannot snapshot a {t.__module__}.{t.__qualname__} at {_path(seen, key)}: "
                        f"its base {exc.args[1].__module__}.{exc.args[1].__qualname__} keeps state "
                        f"Python cannot see (runtime/fast.py lists what a world may hold)") from None
                continue
            if has_dict:
                for k, v in obj.__dict__.items():
                    push((v, key, f".{k}"))
            for desc in slots:
                try:
                    push((desc.__get__(obj), key, f".{desc.__name__}"))
                except AttributeError:
                    pass                   # an unset slot
    return seen


class Snapshot:
    """The contents of every object reachable from ``roots`` (but ``skip``),
    as they are now; :meth:`restore` writes them back in place."""

    __slots__ = ("dicts", "lists", "sets", "slots", "unset", "cells", "deques", "rebuilt",
                 "objects", "_assign")

    def __init__(self, roots: Any, skip: frozenset[int] = frozenset()) -> None:
        self.dicts: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
        self.lists: list[tuple[Any, Any]] = []      # list and bytearray: x[:] = saved
        self.sets: list[tuple[set[Any], set[Any]]] = []
        self.deques: list[tuple[deque[Any], list[Any]]] = []
        self.slots: list[tuple[Any, Any, Any]] = []       # (descriptor.__set__, obj, value)
        self.unset: list[tuple[Any, Any]] = []            # (descriptor, obj): a slot not set
        self.cells: list[tuple[Any, Any]] = []
        #: how to put a fresh copy of a rebuilt object (an itertools.count)
        #: back where it was: (constructor, args, [(how, holder, key)])
        self.rebuilt: dict[int, tuple[Any, Any, list[tuple[str, Any, Any]]]] = {}
        objs = reachable(roots, skip)
        #: every recorded object, kept alive (their ids key ``rebuilt``)
        self.objects = [o for o, _, _ in objs.values()]
        for key, (obj, _parent, _step) in objs.items():
            t = type(obj)
            if t in _REBUILT:
                continue
            if t is types.CellType:
                try:
                    value = obj.cell_contents
                except ValueError:
                    continue
                self.cells.append((obj, value))
                self._note(value, "cell", obj, None)
                continue
            if isinstance(obj, (list, bytearray)):
                self.lists.append((obj, list(obj) if t is not bytearray else bytearray(obj)))
                for i, v in enumerate(obj):
                    self._note(v, "item", obj, i)
            elif isinstance(obj, dict):
                self.dicts.append((obj, dict(obj)))
                for k, v in obj.items():
                    self._note(v, "item", obj, k)
            elif isinstance(obj, set):
                self.sets.append((obj, set(obj)))
            elif isinstance(obj, deque):
                self.deques.append((obj, list(obj)))
            elif isinstance(obj, tuple):
                for v in obj:
                    if type(v) in _REBUILT:
                        raise SnapshotError(
                            f"cannot snapshot a {type(v).__qualname__} inside a tuple at "
                            f"{_path(objs, key)}: it is rebuilt at each restore, a tuple cannot "
                            f"take the new one")
            if _python_class(t):
                has_dict, descs = _instance_layout(t)
                if has_dict:
                    d = obj.__dict__
                    self.dicts.append((d, dict(d)))
                    for k, v in d.items():
                        self._note(v, "item", d, k)
                for desc in descs:
                    try:
                        v = desc.__get__(obj)
                    except AttributeError:
                        self.unset.append((desc, obj))
                        continue
                    self.slots.append((desc.__set__, obj, v))
                    self._note(v, "slot", desc.__set__, obj)
        self._assign = self._compile()

    def _note(self, value: Any, how: str, holder: Any, key: Any) -> None:
        if type(value) in _REBUILT:
            entry = self.rebuilt.get(id(value))
            if entry is None:
                recipe = value.__reduce__()
                if len(recipe) != 2:
                    raise SnapshotError(f"cannot snapshot {value!r}: its __reduce__ carries state")
                entry = self.rebuilt[id(value)] = (recipe[0], recipe[1], [])
            entry[2].append((how, holder, key))

    def _compile(self) -> Callable[[], None]:
        """The slot assignments as straight-line code: ``o.field = value``
        is one specialised bytecode (STORE_ATTR_SLOT), where a loop calling
        each descriptor's ``__set__`` costs five times as much.  Classes
        with their own ``__setattr__`` (frozen dataclasses) keep the
        descriptor call, which bypasses it as ``object.__setattr__`` would."""
        objs: list[Any] = []
        values: list[Any] = []
        lines = ["def assign(O, V, S):"]
        last = None
        rest = []
        for setter, obj, value in self.slots:
            name = setter.__self__.__name__
            if type(obj).__setattr__ is not object.__setattr__ or not name.isidentifier():
                rest.append((setter, obj, value))
                continue
            if obj is not last:
                lines.append(f"    o = O[{len(objs)}]")
                objs.append(obj)
                last = obj
            lines.append(f"    o.{name} = V[{len(values)}]")
            values.append(value)
        lines.append("    for setter, obj, value in S:")
        lines.append("        setter(obj, value)")
        ns: dict[str, Any] = {}
        exec(compile("\n".join(lines), "<snapshot restore>", "exec"), ns)  # noqa: S102 - our own text
        assign = ns["assign"]
        objs_t, values_t, rest_t = tuple(objs), tuple(values), tuple(rest)
        return lambda: assign(objs_t, values_t, rest_t)  # type: ignore[no-any-return]

    def restore(self) -> None:
        """Put every recorded object back as it was when the snapshot was taken."""
        for d, saved in self.dicts:
            d.clear()
            d.update(saved)
        for lst, items in self.lists:
            lst[:] = items
        for s, members in self.sets:
            s.clear()
            s.update(members)
        for dq, items in self.deques:
            dq.clear()
            dq.extend(items)
        self._assign()
        for desc, obj in self.unset:
            try:
                desc.__delete__(obj)
            except AttributeError:
                pass
        for cell, value in self.cells:
            cell.cell_contents = value
        for make, args, places in self.rebuilt.values():
            fresh = make(*args)
            for how, holder, key in places:
                if how == "item":
                    holder[key] = fresh
                elif how == "slot":
                    holder(key, fresh)
                else:
                    holder.cell_contents = fresh


class WorldPool:
    """Worlds built by ``build()``, each lent to one owner at a time and
    restored to its snapshot before it is lent again.

    :meth:`acquire` returns a world in its initial state: a free one,
    restored, or a new build.  A world is free again once its owner (any
    object that can be weakly referenced: the explorer's ``Execution``) is
    gone, so a world is never restored under someone still holding the
    execution that ran on it.  The first two builds tell which objects every
    build shares (see the essay above).

    Memory stays bounded whatever the callers keep: at most ``keep`` free
    worlds are kept, and at most ``lend`` lent ones are tracked — beyond
    that the oldest is left to its owner (it goes when the owner goes; a
    world that refers back to its owner would otherwise never come back)."""

    __slots__ = ("build", "keep", "lend", "free", "lent", "skip", "_shared", "builds")

    def __init__(self, build: Callable[[], Any], keep: int = 4, lend: int = 64) -> None:
        self.build = build
        self.keep = keep
        self.lend = lend
        self.free: list[tuple[Any, Snapshot]] = []
        self.lent: list[tuple[weakref.ref[Any], Any, Snapshot]] = []
        self.skip: frozenset[int] | None = None
        self._shared: list[Any] = []     # keeps the shared objects (and so their ids) alive
        #: how many worlds were built (the rest of the acquisitions restored one)
        self.builds = 0

    def acquire(self, owner: Any) -> Any:
        """A world in its initial state, lent to ``owner`` until it is garbage."""
        lent = self.lent
        for i in range(len(lent) - 1, -1, -1):
            if lent[i][0]() is None:
                _, world, snap = lent.pop(i)
                self.free.append((world, snap))
        if self.free:
            world, snap = self.free.pop()
            snap.restore()
        elif self.skip is None:
            world, snap = self._first()
        else:
            world = self._build()
            snap = Snapshot(world, self.skip)
        lent.append((weakref.ref(owner), world, snap))
        del lent[:-self.lend]
        del self.free[self.keep:]
        return world

    def _build(self) -> Any:
        self.builds += 1
        return self.build()

    def _first(self) -> tuple[Any, Snapshot]:
        """Build twice; what both reach is shared, the rest is each one's own."""
        a = self._build()
        b = self._build()
        in_a = reachable(a, strict=False)
        in_b = reachable(b, strict=False)
        shared = [obj for key, (obj, _, _) in in_a.items() if key in in_b]
        self._shared = shared
        self.skip = frozenset(id(o) for o in shared)
        self.free.append((b, Snapshot(b, self.skip)))
        return a, Snapshot(a, self.skip)
