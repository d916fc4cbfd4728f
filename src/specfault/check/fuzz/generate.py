"""Programs from a seed, and mutations of programs (syzkaller's idea).

:func:`generate` draws a fresh program: a window (mostly 4 pages), maybe
a file, a setup (the window mapped — anonymous or the file, private or
shared, sometimes as two mappings — some pages touched, sometimes a forked
child that stays alive, sometimes one more syscall), then 2–4 threads of
1–4 ops each, on the first process or the child, and sometimes memory
pressure (a few free frames once the setup ran), kswapd among the actors
more often than not then.  :func:`mutate` changes a
corpus program: insert, delete, swap or redraw an op, redraw one argument,
splice in a thread of another corpus program, add or drop a thread, add or
drop a setup op, turn memory pressure or kswapd on or off.  Both take a ``random.Random`` and nothing else random, so
the same seed gives the same programs on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

from specfault.check.fuzz.program import (
    MAX_OPS,
    MAX_SETUP,
    MAX_THREADS,
    Op,
    Program,
    ProgramError,
    ThreadProg,
)
from specfault.check.fuzz.vocab import PARAMS, VOCAB, Ctx, draw_op


def _base_mappings(rng: random.Random, w: int, file_pages: int) -> list[Op]:
    def one(k: int, n: int) -> Op:
        kind = "file" if file_pages and rng.random() < 0.35 else "anon"
        share = "shared" if rng.random() < 0.2 else "private"
        prot = rng.choices(("rw", "r", "rx"), (8, 1, 1))[0]
        return Op("mmap", (k, n, prot, kind, share, "fixed", 0 if kind == "anon" else
                           rng.randrange(file_pages)))

    r = rng.random()
    if r < 0.08:
        return []                                  # nothing mapped: the threads map
    if r < 0.25 and w > 1:
        h = rng.randrange(1, w)
        return [one(0, h), one(h, w - h)]
    return [one(0, w)]


def generate(rng: random.Random) -> Program:
    """A fresh random program."""
    w = rng.choices((2, 3, 4, 6), (2, 2, 6, 1))[0]
    file_pages = rng.choice((0, 0, 0, 2, 4))
    ctx = Ctx(w, file_pages)
    setup: list[tuple[str, Op]] = [("P", op) for op in _base_mappings(rng, w, file_pages)]
    # touch some pages: the first of each PTE table mostly (its table and
    # the anon_vma then exist, so the lockless paths have something to
    # speculate on), others less often (left for the threads to fault)
    for k in range(w):
        x = rng.random()
        first = k in (0, w // 2)
        if x < (0.7 if first else 0.2):
            setup.append(("P", Op("write", (k,))))
        elif x < (0.8 if first else 0.35):
            setup.append(("P", Op("read", (k,))))
    procs = ["P"]
    if rng.random() < 0.25:
        setup.append(("P", Op("fork", ())))
        procs.append("C1")
    if rng.random() < 0.15:
        setup.append(("P", draw_op(rng, ctx, setup=True)))
    setup = setup[:MAX_SETUP]
    # small programs mostly: the portfolio covers their interleavings best
    threads = [_thread(rng, ctx, procs) for _ in range(rng.choices((2, 3, 4), (7, 2, 1))[0])]
    touched = {int(op.args[0]) for _, op in setup if op.name in ("read", "write")}
    threads = [_untouched(rng, t, w, touched) for t in threads]
    if rng.random() < AIM:
        threads = _aim(rng, threads, ctx)
    free, kswapd = _pressure(rng)
    prog = Program(w, file_pages, tuple(setup), tuple(threads), free, kswapd)
    prog.check()                     # draws stay in range: never raises
    return prog


#: chance that a fresh program runs under memory pressure, and then that
#: kswapd is one of its actors
PRESSURE = 0.25
KSWAPD = 0.6
#: free frames under pressure: 3 wakes kswapd at the first allocation, 2
#: and 1 also reclaim directly (the min watermark is 2), 5 after a few
FREE = (1, 2, 2, 3, 3, 5)


def _pressure(rng: random.Random) -> tuple[int, bool]:
    """(free, kswapd) of a fresh program (0, False: no pressure)."""
    if rng.random() >= PRESSURE:
        return 0, False
    return rng.choice(FREE), rng.random() < KSWAPD


def _press(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    """Memory pressure on, off or redrawn; kswapd in or out."""
    x = rng.random()
    if prog.free and x < 0.3:
        return replace(prog, kswapd=not prog.kswapd)
    if prog.free and x < 0.5:
        return replace(prog, free=0, kswapd=False)
    return replace(prog, free=rng.choice(FREE), kswapd=prog.kswapd or rng.random() < KSWAPD)


#: chance that a fresh program aims a syscall of one thread at a page
#: another thread accesses (syzkaller's resources: ops that share an
#: object are the ones that race)
AIM = 0.6


def _untouched(rng: random.Random, t: ThreadProg, w: int, touched: set[int]) -> ThreadProg:
    """Point most accesses at pages the setup did not touch: those fault."""
    fresh = [k for k in range(w) if k not in touched]
    if not fresh:
        return t
    ops = [Op(op.name, (rng.choice(fresh),)) if not VOCAB[op.name].syscall and op.args
           and rng.random() < 0.6 else op for op in t.ops]
    return ThreadProg(t.proc, tuple(ops))


def _aim(rng: random.Random, threads: list[ThreadProg], ctx: Ctx) -> list[ThreadProg]:
    """Make a syscall's range (its ``start``, ``count``) cover a page that
    an access of another thread touches."""
    accesses = [(i, op) for i, t in enumerate(threads) for op in t.ops
                if not VOCAB[op.name].syscall and int(op.args[0]) < ctx.window]
    calls = [(i, j) for i, t in enumerate(threads) for j, op in enumerate(t.ops)
             if VOCAB[op.name].params[:2] == ("start", "count")]
    pairs = [(a, c) for a in accesses for c in calls if a[0] != c[0]]
    if not pairs:
        return threads
    (_, acc), (i, j) = rng.choice(pairs)
    page = int(acc.args[0])
    half = ctx.window // 2
    start = rng.choice((page, 0 if page < half else half, 0))
    count = rng.randint(page - start + 1, ctx.window - start)
    op = threads[i].ops[j]
    ops = list(threads[i].ops)
    ops[j] = Op(op.name, (start, count) + op.args[2:])
    out = list(threads)
    out[i] = ThreadProg(threads[i].proc, tuple(ops))
    return out


def _thread(rng: random.Random, ctx: Ctx, procs: Sequence[str]) -> ThreadProg:
    proc = procs[-1] if len(procs) > 1 and rng.random() < 0.3 else "P"
    n = rng.choices((1, 2, 3, 4), (5, 4, 2, 1))[0]
    ops = [draw_op(rng, ctx, allow_last=(i == n - 1)) for i in range(n)]
    return ThreadProg(proc, tuple(ops))


# ------------------------------------------------------------------ mutation
def _with_thread(prog: Program, i: int, ops: Sequence[Op]) -> Program:
    threads = list(prog.threads)
    threads[i] = ThreadProg(threads[i].proc, tuple(ops))
    return replace(prog, threads=tuple(threads))


def _insert(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    i = rng.randrange(len(prog.threads))
    ops = list(prog.threads[i].ops)
    if len(ops) >= MAX_OPS:
        raise ProgramError("full")
    at = rng.randrange(len(ops) + 1)
    ops.insert(at, draw_op(rng, Ctx(prog.window, prog.file_pages), allow_last=at == len(ops)))
    return _with_thread(prog, i, ops)


def _delete(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    i = rng.randrange(len(prog.threads))
    ops = list(prog.threads[i].ops)
    if len(ops) < 2:
        raise ProgramError("one op")
    del ops[rng.randrange(len(ops))]
    return _with_thread(prog, i, ops)


def _swap(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    i = rng.randrange(len(prog.threads))
    ops = list(prog.threads[i].ops)
    if len(ops) < 2:
        raise ProgramError("one op")
    j = rng.randrange(len(ops) - 1)
    ops[j], ops[j + 1] = ops[j + 1], ops[j]
    return _with_thread(prog, i, ops)


def _redraw(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    i = rng.randrange(len(prog.threads))
    ops = list(prog.threads[i].ops)
    j = rng.randrange(len(ops))
    ops[j] = draw_op(rng, Ctx(prog.window, prog.file_pages), allow_last=j == len(ops) - 1)
    return _with_thread(prog, i, ops)


def _tweak_arg(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    i = rng.randrange(len(prog.threads))
    ops = list(prog.threads[i].ops)
    j = rng.randrange(len(ops))
    kind = VOCAB[ops[j].name]
    if not kind.params:
        raise ProgramError("no argument")
    a = rng.randrange(len(kind.params))
    args = list(ops[j].args)
    args[a] = PARAMS[kind.params[a]].draw(rng, Ctx(prog.window, prog.file_pages))
    ops[j] = Op(ops[j].name, tuple(args))
    return _with_thread(prog, i, ops)


def _splice(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    other = rng.choice(corpus) if corpus else prog
    donor = rng.choice(other.threads)
    i = rng.randrange(len(prog.threads))
    proc = donor.proc if donor.proc in prog.processes() else "P"
    threads = list(prog.threads)
    threads[i] = ThreadProg(proc, donor.ops)
    return replace(prog, threads=tuple(threads))


def _add_thread(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    if len(prog.threads) >= MAX_THREADS:
        raise ProgramError("full")
    t = _thread(rng, Ctx(prog.window, prog.file_pages), prog.processes())
    return replace(prog, threads=prog.threads + (t,))


def _drop_thread(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    if len(prog.threads) <= 2:
        raise ProgramError("two threads")
    i = rng.randrange(len(prog.threads))
    return replace(prog, threads=prog.threads[:i] + prog.threads[i + 1:])


def _setup_op(rng: random.Random, prog: Program, corpus: Sequence[Program]) -> Program:
    setup = list(prog.setup)
    if setup and (len(setup) >= MAX_SETUP or rng.random() < 0.4):
        del setup[rng.randrange(len(setup))]
    else:
        setup.insert(rng.randrange(len(setup) + 1),
                     ("P", draw_op(rng, Ctx(prog.window, prog.file_pages), setup=True)))
    return replace(prog, setup=tuple(setup))


Mutation = Callable[[random.Random, Program, Sequence[Program]], Program]
#: the mutations and how often each is drawn
MUTATIONS: tuple[tuple[str, Mutation, int], ...] = (
    ("insert", _insert, 4), ("delete", _delete, 2), ("swap", _swap, 2), ("redraw", _redraw, 3),
    ("arg", _tweak_arg, 4), ("splice", _splice, 2), ("add-thread", _add_thread, 1),
    ("drop-thread", _drop_thread, 1), ("setup", _setup_op, 2), ("pressure", _press, 1),
)


def mutate(rng: random.Random, prog: Program, corpus: Sequence[Program], tries: int = 20) -> Program:
    """One or two mutations of ``prog`` that give a valid program (a fresh
    one if ``tries`` attempts do not)."""
    for _ in range(tries):
        out = prog
        try:
            for _ in range(rng.choice((1, 1, 2))):
                _, fn, _ = rng.choices(MUTATIONS, [w for _, _, w in MUTATIONS])[0]
                out = fn(rng, out, corpus)
            out.check()
        except ProgramError:
            continue
        if out != prog:
            return out
    return generate(rng)
