"""A fuzz program: plain data — printable, JSON round-trip, hashable.

A :class:`Program` is a small concurrent user of the memory manager:

* ``window`` pages of address space it works in, laid out so the window
  straddles a PMD boundary (its pages live in two PTE tables), plus a
  *far* window of the same size 64 pages below (where ``mremap`` moves
  things and hinted ``mmap`` may land).  Page slots ``0..window-1`` are
  the window, ``window..2*window-1`` the far window (:func:`page_addr`);
* ``file_pages``: the size of the one file ``/f`` (0: no file), opened
  read-write by the first process;
* ``setup``: ``(process, op)`` pairs run one after the other with the
  public API before the threads start (``fork`` there makes a child
  process ``C1``, ``C2``, ... that stays alive);
* ``threads``: each a process name (threads of one process share its mm)
  and a short sequence of ops, run concurrently under the explorer;
* ``free``: memory pressure (0: none).  With ``free=N`` the machine has
  watermarks (min :data:`~.compile.FUZZ_WMARK_MIN`) and, once the setup
  has run, exactly N free frames (the rest held by the kernel): the
  threads' allocations wake kswapd at the low watermark and reclaim
  directly at min (``mm/vmscan.py``);
* ``kswapd``: kswapd0 runs as one more actor (a kernel thread, no mm): it
  sleeps until an allocation wakes it, then balances the node —
  interleaved by the explorer with the threads, like the
  ``faults-under-pressure`` race.  Only with ``free``.

An :class:`Op` is a name from the vocabulary (:mod:`.vocab`) and its
arguments (ints and short words).  The text form is what reports and
replay lines print; :meth:`Program.parse` reads it back::

    win=4 file=2 | P.mmap(0,4,rw,anon,private,fixed,0) P.write(0) P.fork() | P: write(1) | P: munmap(0,4)
    win=4 file=0 free=2 kswapd | P.mmap(0,4,rw,anon,private,fixed,0) P.write(0) | P: write(1) | P: write(2)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from specfault.check.fuzz.base import (  # noqa: F401 - re-exported
    FAR_OFFSET,
    MAX_FILE_PAGES,
    MAX_FREE,
    MAX_OPS,
    MAX_SETUP,
    MAX_THREADS,
    MAX_WINDOW,
    PAGE,
    PMD_BOUNDARY,
    Arg,
    Op,
    ProgramError,
    page_addr,
    regions,
    window_base,
)
from specfault.check.fuzz.vocab import PARAMS, VOCAB, check_op


@dataclass(frozen=True)
class ThreadProg:
    proc: str
    ops: tuple[Op, ...]

    def text(self) -> str:
        return f"{self.proc}: " + " ".join(op.text() for op in self.ops)


@dataclass(frozen=True)
class Program:
    window: int
    file_pages: int
    setup: tuple[tuple[str, Op], ...]
    threads: tuple[ThreadProg, ...]
    #: free frames once the setup has run (0: no memory pressure)
    free: int = 0
    #: kswapd0 as an actor of the program (only with ``free``)
    kswapd: bool = False

    # -- forms --
    def text(self) -> str:
        head = f"win={self.window} file={self.file_pages}"
        if self.free:
            head += f" free={self.free}"
        if self.kswapd:
            head += " kswapd"
        setup = " ".join(f"{p}.{op.text()}" for p, op in self.setup) or "-"
        return " | ".join([head, setup] + [t.text() for t in self.threads])

    def __str__(self) -> str:
        return self.text()

    def to_json(self) -> dict[str, Any]:
        pressure = {"free": self.free, "kswapd": self.kswapd} if self.free or self.kswapd else {}
        return {"window": self.window, "file_pages": self.file_pages, **pressure,
                "setup": [[p, op.name, list(op.args)] for p, op in self.setup],
                "threads": [{"proc": t.proc, "ops": [[op.name, list(op.args)] for op in t.ops]}
                            for t in self.threads]}

    @classmethod
    def from_json(cls, data: Any) -> Program:
        try:
            prog = cls(int(data["window"]), int(data["file_pages"]),
                       tuple((str(p), Op(str(n), _args(a))) for p, n, a in data["setup"]),
                       tuple(ThreadProg(str(t["proc"]), tuple(Op(str(n), _args(a)) for n, a in t["ops"]))
                             for t in data["threads"]),
                       int(data.get("free", 0)), bool(data.get("kswapd", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgramError(f"not a fuzz program: {type(exc).__name__}: {exc}") from None
        prog.check()
        return prog

    @classmethod
    def parse(cls, text: str) -> Program:
        """Read the text form back (:meth:`text`)."""
        parts = [p.strip() for p in text.strip().split("|")]
        if len(parts) < 2:
            raise ProgramError(f"not a fuzz program (HEAD | SETUP | THREAD ...): {text[:80]!r}")
        words = parts[0].split()
        kswapd = "kswapd" in words
        head = dict(_kv(w) for w in words if w != "kswapd")
        if not {"win", "file"} <= set(head) <= {"win", "file", "free"} \
                or words.count("kswapd") > 1:
            raise ProgramError(f"program head must be 'win=N file=N [free=N] [kswapd]', "
                               f"not {parts[0]!r}")
        setup: list[tuple[str, Op]] = []
        if parts[1] != "-":
            for word in _ops_words(parts[1]):
                proc, dot, rest = word.partition(".")
                if not dot:
                    raise ProgramError(f"setup op {word!r} must be PROC.op(args)")
                setup.append((proc, _op(rest)))
        threads = []
        for part in parts[2:]:
            proc, colon, rest = part.partition(":")
            if not colon:
                raise ProgramError(f"thread {part!r} must be 'PROC: op(args) ...'")
            threads.append(ThreadProg(proc.strip(), tuple(_op(w) for w in _ops_words(rest))))
        prog = cls(head["win"], head["file"], tuple(setup), tuple(threads), head.get("free", 0),
                   kswapd)
        prog.check()
        return prog

    def digest(self) -> str:
        """A short stable name (the same on every machine and run)."""
        return hashlib.sha1(self.text().encode()).hexdigest()[:10]

    # -- validity --
    def check(self) -> None:
        """Raise :class:`ProgramError` unless every op is in the vocabulary
        with arguments in range, and the processes exist."""
        if not 1 <= self.window <= MAX_WINDOW:
            raise ProgramError(f"window must be 1..{MAX_WINDOW} pages, not {self.window}")
        if not 0 <= self.file_pages <= MAX_FILE_PAGES:
            raise ProgramError(f"file must be 0..{MAX_FILE_PAGES} pages, not {self.file_pages}")
        if not 0 <= self.free <= MAX_FREE:
            raise ProgramError(f"free must be 0..{MAX_FREE} frames, not {self.free}")
        if self.kswapd and not self.free:
            raise ProgramError("kswapd needs memory pressure (free=N): nothing would wake it")
        if len(self.setup) > MAX_SETUP:
            raise ProgramError(f"at most {MAX_SETUP} setup ops, not {len(self.setup)}")
        if not 1 <= len(self.threads) <= MAX_THREADS:
            raise ProgramError(f"a program has 1..{MAX_THREADS} threads, not {len(self.threads)}")
        known = ["P"]
        for p, op in self.setup:
            if p not in known:
                raise ProgramError(f"setup op {p}.{op.text()}: no process {p!r} yet")
            check_op(op, self, setup=True)
            if op.name == "fork":
                known.append(f"C{len(known)}")
        procs = known
        for t in self.threads:
            if t.proc not in procs:
                raise ProgramError(f"thread of {t.proc!r}: no such process ({', '.join(procs)})")
            if not 1 <= len(t.ops) <= MAX_OPS:
                raise ProgramError(f"a thread has 1..{MAX_OPS} ops, not {len(t.ops)}")
            for i, op in enumerate(t.ops):
                check_op(op, self, setup=False)
                if VOCAB[op.name].last and i != len(t.ops) - 1:
                    raise ProgramError(f"{op.text()} must be its thread's last op")

    def processes(self) -> list[str]:
        """P, then C1, C2, ... for each setup fork, in order."""
        out = ["P"]
        for _, op in self.setup:
            if op.name == "fork":
                out.append(f"C{len(out)}")
        return out

    def size(self) -> tuple[int, int, int, int]:
        """What shrinking lowers: threads (kswapd is one), ops, setup ops,
        then how elaborate the arguments are (the integers' sum, the
        window, the file, memory pressure, and each word argument that is
        not its kind's simplest)."""
        # (fewer free frames is more pressure: further from none)
        weight = self.window + self.file_pages + (MAX_FREE + 1 - self.free if self.free else 0)
        for op in [op for _, op in self.setup] + [op for t in self.threads for op in t.ops]:
            for p, a in zip(VOCAB[op.name].params, op.args, strict=False):
                if isinstance(a, int):
                    weight += a
                elif PARAMS[p].simpler(a, None):  # type: ignore[arg-type]
                    weight += 1
        return (len(self.threads) + self.kswapd, sum(len(t.ops) for t in self.threads),
                len(self.setup), weight)


def _args(raw: Any) -> tuple[Arg, ...]:
    out: list[Arg] = []
    for a in raw:
        if isinstance(a, bool) or not isinstance(a, (int, str)):
            raise ProgramError(f"an op argument is an integer or a word, not {a!r}")
        out.append(a)
    return tuple(out)


_OP = re.compile(r"^([a-z_]+)\(([^()]*)\)$")


def _op(word: str) -> Op:
    m = _OP.match(word.strip())
    if not m:
        raise ProgramError(f"not an op: {word!r} (expected name(arg,...))")
    args: list[Arg] = []
    for a in filter(None, (x.strip() for x in m.group(2).split(","))):
        args.append(int(a) if re.fullmatch(r"-?\d+", a) else a)
    return Op(m.group(1), tuple(args))


def _ops_words(text: str) -> list[str]:
    return [w for w in text.split() if w]


def _kv(word: str) -> tuple[str, int]:
    k, eq, v = word.partition("=")
    if not eq or not v.isdigit():
        raise ProgramError(f"program head: expected KEY=N, not {word!r}")
    return k, int(v)


def dumps(prog: Program) -> str:
    return json.dumps(prog.to_json(), separators=(",", ":"))


def loads(text: str) -> Program:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProgramError(f"not JSON: {exc}") from None
    return Program.from_json(data)
