"""Source-set DPOR with sleep sets: every behaviour, no preemption bound.

P. Abdulla, S. Aronis, B. Jonsson, K. Sagonas, "Optimal Dynamic Partial
Order Reduction", POPL 2014, and "Source Sets: A Foundation for Optimal
Dynamic Partial Order Reduction", JACM 64(4), 2017 — Algorithm 1
(source-DPOR).  Two executions are *equivalent* (Mazurkiewicz) when one is
obtained from the other by swapping adjacent independent steps
(:mod:`.independence`: footprints that share no written location).
Equivalent executions end in the same state, with the same results
returned to every task.  DPOR runs at least one execution of every
equivalence class of complete executions, and usually exactly one, without
a preemption bound.

Words
-----
* ``E`` is the current execution (a sequence of events; an event is one
  step of one actor), ``pre(E, e)`` the prefix of ``E`` before event ``e``.
* *happens-before* ``→``: the smallest transitive order with ``e → e'``
  when ``e`` precedes ``e'`` in ``E`` and they are of the same actor, or
  dependent, or ``e'`` declares an *order* (mode :data:`.independence.HB`)
  that ``e`` declared before it (an RCU callback's run after the
  ``call_rcu`` that queued it and the read-side exits that ended its grace
  period: ``e'`` cannot run before ``e`` in any execution, as a thread's
  first step cannot run before the step that spawns it).  Kept as one
  vector clock per event.
* ``e`` and ``e'`` *race* when they are dependent, of different actors, and
  ``e → e'`` holds only directly (no event ``e''`` with ``e → e'' → e'``).
  An order is never a race: it cannot be reversed.
* ``notdep(e, E)``: the events after ``e`` in ``E`` that do not happen after
  ``e``.  The *initials* ``I(v)`` of a sequence ``v`` are the actors whose
  first event in ``v`` has no happens-before predecessor in ``v``: the
  actors that can start an execution equivalent to ``v``.
* ``backtrack(n)``: the actors to explore at node ``n``; ``done(n)`` those
  explored; ``sleep(n)``: actors inherited asleep (an execution starting
  with them from here is equivalent to one already explored).

The algorithm (stateless, as ``dfs``: each execution re-runs the scenario
from its setup and replays the stack's choices)
------------------------------------------------------------------------
1. Run an execution.  At a node reached for the first time, its sleep set
   is the parent's ``sleep ∪ done`` minus the actors whose pending step is
   dependent with the step just taken (and minus that step's actor); if
   every runnable actor sleeps, the run is abandoned (*sleep-set blocked*,
   counted as ``pruned``).  Otherwise the last actor continues if it can
   and is awake (the non-preemptive default), else the lowest-numbered
   awake one; ``backtrack(n) = {it}``.
2. When the run ends, for each new event ``e'`` (past the node changed
   for this run) and each event ``e`` it races with: let
   ``E' = pre(E, e)`` and ``v = notdep(e, E).e'``, with ``n`` the node of
   ``E'``:
   a. if some initial of ``v`` is in ``backtrack(n)`` or in ``sleep(n)``,
      the reversal is already covered: nothing to do;
   b. else if some initial of ``v`` can run at ``n`` (it was runnable
      there), add one (``e'``'s actor if it is one) to ``backtrack(n)``;
   c. else the race cannot be reversed at ``n`` (see *Disabled actors*):
      walk back from ``e`` over the earlier events ``e0`` of other actors
      that are dependent with ``e'`` and not happening before ``e'``'s
      actor's previous event, and do (a)–(b) for the pair ``(e0, e')``
      until one is covered or added;
   d. if ``e'`` may have been *enabled* by ``e`` — its op blocks (a lock,
      a ``WaitUntil``), it is the RCU processor's, it follows its actor's
      ``Yield``, or tasks share CPUs — do (a)–(b) and also (c) for *every*
      such ``e0``: ``e'`` may not be able to run before ``e`` at all (an
      ``unlock`` then the other task's ``lock``), so the order that matters
      is the one of the steps before (the two ``lock`` s).
3. Backtrack: the deepest node ``n`` with an actor in
   ``backtrack(n) − done(n) − sleep(n)``: mark its current choice done
   (it goes to sleep for the later siblings), choose that actor, drop the
   nodes below, and re-run (1) replaying the stack.  No such node: the
   search is exhausted.

Soundness conditions and limits (be exact about what is verified)
-----------------------------------------------------------------
* **Footprints must be complete** (:mod:`.independence`): everything an
  op's ``perform`` reads or writes and its ``enabled`` reads.  A
  footprint that is too small makes DPOR skip behaviours; one that is too
  large only costs executions.  ``runtime.call.Call`` and blocking ops
  without a footprint are dependent on everything.
* **Code between ops must be private** to its task (the engine's rule).
  Two exceptions are detected, not guessed.  ``Scenario.clock`` names a
  value that the code between ops changes (the mm scenarios' history
  clock, which orders steps in real time for the linearizability check);
  events that change it are dependent on each other (and a sleeping actor
  whose step changed it wakes when another such step runs), so every
  real-time order of the scenario's steps stays explored.  And
  ``runtime.ops.UNDECLARED_WRITES`` counts the writes no footprint can
  show — an object freed (poisoned) or a VMA recycled in place, by an op
  or by the code after it (the ``*_free_immediate`` mutants free at once,
  outside any op): a task's step during which it moved is dependent on
  every step (the RCU processor's frees are declared by its callbacks).
  These flags are known only once a step ran; a sleeping actor keeps the
  flags its step had when it was explored (its step is the same while it
  sleeps).
* **What is preserved**: one execution per equivalence class of complete
  executions, hence every final state, every final-property verdict (it
  depends on the final state and the tasks' results), every deadlock,
  and every failure raised by an op (a use after free, a bad unlock: the
  op's result depends only on what its footprint covers).  An execution
  abandoned by the step limit (livelock) is reported like in ``dfs``.
* **Per-step invariants are checked on the states DPOR visits, which are
  not all reachable states**: two independent writers' intermediate
  states are only visited in the order DPOR chose.  A per-step invariant
  violation that only holds in unvisited intermediate states is missed —
  unless it leaves a trace in the final state or the results (most do:
  the mm scenarios' invariant is about PTEs that outlive the step).  Use
  ``dfs`` (sleep sets keep every reachable state) for such invariants.
* **RCU callbacks**: the callback processor is an actor.  Its step is
  dependent on what the callback it runs declares (the objects it frees)
  and on the RCU parts :mod:`.independence` names (the readers whose exit
  would make an older callback ready first); a callback that declares
  nothing is dependent on every step.  Its run is ordered (``HB``) after
  its ``call_rcu`` and after the read-side exits that ended its grace
  period: adding an order that holds in every execution to
  happens-before drops only "races" that cannot be reversed.  (An order
  added where it does not always hold would hide races: each declaring
  step must come before the ordered one in *every* execution — the exits
  declare it only while their task is still in the callback's set, so the
  exit that removes it is among them and the others come before it in
  program order.)  The callbacks still ready at the end run before the
  final check in every execution, as in ``dfs``.
* **Fairness** (``check/engine.py``): a task whose last step was a
  ``Yield`` is not runnable until another actor has taken a step.  That
  rule reads who moved last, so a ``Yield`` is dependent on every step
  (:mod:`.independence`), and the yielder's next step is never reordered
  before the step after its ``Yield``.
* **Disabled actors** (blocked on a lock or a ``WaitUntil``, a CPU held by
  a task that cannot be preempted, the fairness rule): the enabledness of
  an actor at each node is what the engine found runnable there.  A race
  whose initials are all disabled at ``E'``, or whose later step may have
  been enabled by the earlier one — the typical one: ``unlock`` then the
  other task's ``lock`` — may not be reversible there; steps 2c/2d reverse
  the dependent steps before it too (the two ``lock`` s), as Flanagan &
  Godefroid (POPL 2005) do with their "co-enabled" condition.  That is an
  over-approximation (more backtracking, never less).  Note that an
  initial being runnable at ``n`` is a property of the *actor*: its first
  step in ``v`` may run while ``e'`` itself could not (the bug 2d fixes
  was exactly this: a random program whose lock order was never
  reversed).  Initials are computed from the happens-before of ``E``,
  which can only make the set smaller (a spurious predecessor): the check
  of 2a then adds more, never less.
* **The step limit** bounds each execution; a scenario whose executions
  do not terminate (a spin loop without ``Yield``) is reported as a
  livelock, exactly like every other strategy.  DPOR does not preserve
  infinite executions (no partial-order method without a cycle proviso
  does); fairness ensures the retry loops of the model terminate.
* **Not optimal**: source sets can still run executions that end
  sleep-set blocked (``pruned``), which wakeup trees (optimal DPOR) would
  avoid; every complete execution it runs is of a distinct class.

Tested (``tests/check/test_dpor.py``): the same set of final observations
as plain unbounded enumeration on every litmus program, on 40 random
programs (loads, stores, atomics, a spinlock, ``Yield``, a blocking
``WaitUntil``, some with all tasks on one CPU), on four small mm
scenarios, and on programs for each refined footprint (two rwsem readers,
with ``down_read`` or the trylock, beside a writer; two RCU readers
against a ``kfree_rcu``, and a reader against a callback that waits for
nobody and one that may wait for it); never more executions than plain
enumeration; every broken litmus variant found, and a pointer kept across
two read-side sections (the order a callback's run gets from the first
exit must not hide its race with the second section).  Two rwsem readers
alone, and two RCU readers beside a callback that waits for neither, are
one execution.  ``benchmarks/dpor_table.py --mutants`` runs DPOR
alone against the named mutants.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from itertools import chain
from typing import Any

from specfault.check.engine import STOP, Chooser, Execution
from specfault.check.independence import HB, Footprint, dependent, footprint_of
from specfault.check.schedule import ScheduleError
from specfault.runtime.ops import UNDECLARED_WRITES

_WILD = ("wait", "*")
_CLOCK = ("clock",)


class _Node:
    """One step of the current path.  ``sleep`` maps each sleeping actor to
    whether its step moves the scenario's clock; ``cur`` holds the
    footprints of the sleeping and done actors' steps in the execution at
    hand (objects are fresh in every execution)."""

    __slots__ = ("enabled", "choice", "backtrack", "done", "sleep", "ticks", "cur")

    def __init__(self, enabled: list[int], sleep: dict[int, int], choice: int) -> None:
        self.enabled = enabled
        self.sleep = sleep
        self.choice = choice
        self.backtrack = {choice}
        self.done: set[int] = set()
        self.ticks: dict[int, int] = {}      # done actor -> its step's flags (TICK, WILD)
        self.cur: dict[int, Footprint] = {}


#: per-event flags, known once the step ran: it moved the scenario's clock;
#: a task's step made a write no footprint shows (``UNDECLARED_WRITES``)
TICK, WILD = 1, 2


def _dep(fa: Footprint, ta: int, fb: Footprint, tb: int) -> bool:
    return bool((ta | tb) & WILD or ta & tb & TICK) or dependent(fa, fb)


class Dpor:
    """Strategy ``dpor`` (see the module doc)."""

    name = "dpor"

    def __init__(self) -> None:
        self.stack: list[_Node] = []
        self._exhausted = False
        self.complete = 0       # executions run to the end
        self.pruned = 0         # sleep-set blocked
        self.races = 0          # races found (reversible or not)
        self.added = 0          # backtrack points added
        self.first_new = 0      # the first event of the next run not already analysed
        # the current execution's events
        self.acts: list[int] = []
        self.fps: list[Footprint] = []
        self.ticks: list[int] = []            # per event: TICK | WILD
        #: per event: could another actor's step have enabled it (a blocking
        #: op, the RCU processor, the step after a Yield, a shared CPU)?
        self.blocking: list[bool] = []
        self._clock: Callable[[Any], Hashable] | None = None
        self._last: Hashable = None
        self._hid = 0
        self.vcs: list[list[int]] = []        # per event: its vector clock
        self.seqs: list[int] = []             # per event: its index among its actor's events (from 1)

    # ------------------------------------------------------------------ run
    def _child_sleep(self, parent: _Node, fp: Footprint, tick: int) -> dict[int, int]:
        cur = parent.cur
        out: dict[int, int] = {}
        for a in chain(parent.sleep, parent.done):
            if a == parent.choice:
                continue
            t = parent.sleep[a] if a in parent.sleep else parent.ticks[a]
            if not _dep(cur[a], t, fp, tick):
                out[a] = t
        return out

    def next(self) -> tuple[int, Chooser] | None:
        if self._exhausted:
            return None
        stack = self.stack
        acts: list[int] = []
        fps: list[Footprint] = []
        ticks: list[int] = []
        blocking: list[bool] = []
        self.acts, self.fps, self.ticks, self.blocking = acts, fps, ticks, blocking
        self._clock = None
        self._last = None
        started = [False]

        def choose(ex: Execution, enabled: list[int]) -> int:
            d = len(acts)
            if not started[0]:
                started[0] = True
                self._clock = ex.scenario.clock
            clock = self._clock
            now = clock(ex.state) if clock is not None else None
            hid = UNDECLARED_WRITES[0]
            if d:
                ticks.append((TICK if now != self._last else 0)
                             | (WILD if hid != self._hid and acts[d - 1] != ex.rcu_actor else 0))
            self._last = now
            self._hid = hid
            if d < len(stack):
                node = stack[d]
                a = node.choice
                if a not in enabled:
                    raise ScheduleError(f"dpor: scenario {ex.scenario.name!r} is not deterministic: "
                                        f"actor {a} cannot run at step {d} on re-execution")
                if d == len(stack) - 1:
                    node.cur = {x: footprint_of(ex, x) for x in chain(node.sleep, node.done)}
            else:
                sleep = self._child_sleep(stack[d - 1], fps[d - 1], ticks[d - 1]) if d else {}
                prev = ex.prev
                if prev in enabled and prev not in sleep:
                    a = prev
                else:
                    for a in enabled:
                        if a not in sleep:
                            break
                    else:
                        return STOP
                node = _Node(list(enabled), sleep, a)
                node.cur = {x: footprint_of(ex, x) for x in sleep}
                stack.append(node)
            acts.append(a)
            fps.append(footprint_of(ex, a))
            if a == ex.rcu_actor or ex.shared_cpus:
                blocking.append(True)
            else:
                op = ex.tasks[a].pending
                blocking.append(op is None or op.blocking or ex.yielded == a)
            return a

        return 0, choose

    # ------------------------------------------------------------- analysis
    def done_with(self, ex: Execution) -> None:
        if ex.pruned:
            self.pruned += 1
        else:
            self.complete += 1
        acts, ticks = self.acts, self.ticks
        if len(ticks) < len(acts):     # the last event's flags
            clock = self._clock
            now = clock(ex.state) if clock is not None else None
            ticks.append((TICK if now != self._last else 0)
                         | (WILD if UNDECLARED_WRITES[0] != self._hid
                            and acts[-1] != ex.rcu_actor else 0))
        self._analyse(ex.n_actors())
        stack = self.stack
        # the run may end before the stack does (a failure): drop the rest
        del stack[len(acts):]
        while stack:
            d = len(stack) - 1
            node = stack[d]
            node.done.add(node.choice)
            node.ticks[node.choice] = ticks[d] if d < len(ticks) else WILD
            todo = [a for a in node.backtrack if a not in node.done and a not in node.sleep]
            if todo:
                node.choice = min(todo)
                self.first_new = d
                return
            stack.pop()
        self._exhausted = True

    def _analyse(self, n_actors: int) -> None:
        """Vector clocks of the run's events; the races of its new events."""
        acts, fps, ticks = self.acts, self.fps, self.ticks
        n = len(acts)
        first_new = self.first_new
        # the events before first_new are those of the last run: keep their clocks
        vcs: list[list[int]] = self.vcs[:first_new]
        seqs: list[int] = self.seqs[:first_new]
        last = [-1] * n_actors
        counts = [0] * n_actors
        records: dict[Any, list[Any]] = {}       # location -> [last write, reads since]
        fields: dict[int, set[str]] = {}          # object -> its fields seen
        g = -1                                    # the last event dependent on everything
        self.vcs, self.seqs = vcs, seqs
        for j in range(n):
            a = acts[j]
            tick = ticks[j] if j < len(ticks) else WILD
            fp = None if tick & WILD else fps[j]
            deps: list[int] = []
            after: list[int] = []                 # ordered before j, not racing with it
            if j < first_new:
                counts[a] += 1
            elif fp is None:
                deps = [last[b] for b in range(n_actors) if b != a and last[b] >= 0]
            else:
                if g >= 0:
                    deps.append(g)
                for obj, f, m in fp:
                    oid = id(obj)
                    if m == HB:          # an order: every earlier step declaring it
                        rec = records.get((oid, f))
                        if rec is not None:
                            after.extend(rec[1])
                        continue
                    keys = ([(oid, x) for x in fields.get(oid, ())] if f in _WILD
                            else [(oid, f), (oid, "*")])
                    for key in keys:
                        rec = records.get(key)
                        if rec is None:
                            continue
                        if rec[0] >= 0:
                            deps.append(rec[0])
                        if m == "w":
                            deps.extend(rec[1])
                if tick & TICK:
                    rec = records.get(_CLOCK)
                    if rec is not None:
                        deps.append(rec[0])
            if j >= first_new:
                p = last[a]
                vc = list(vcs[p]) if p >= 0 else [0] * n_actors
                for x in chain(deps, after):
                    vx = vcs[x]
                    for b in range(n_actors):
                        if vx[b] > vc[b]:
                            vc[b] = vx[b]
                counts[a] += 1
                vc[a] = counts[a]
                vcs.append(vc)
                seqs.append(counts[a])
                if deps:
                    self._races(j, deps, p, after)
            if fp is None:
                records.clear()
                fields.clear()
                g = j
            else:
                for obj, f, m in fp:
                    oid = id(obj)
                    if m == HB:
                        records.setdefault((oid, f), [-1, []])[1].append(j)
                        continue
                    fld = "*" if f in _WILD else f
                    fields.setdefault(oid, set()).add(fld)
                    key = (oid, fld)
                    rec = records.get(key)
                    if rec is None:
                        rec = records[key] = [-1, []]
                    if m == "w":
                        rec[0] = j
                        rec[1] = []
                    else:
                        rec[1].append(j)
                if tick & TICK:
                    records[_CLOCK] = [j, []]
            last[a] = j

    def _races(self, j: int, deps: list[int], p: int, after: list[int]) -> None:
        acts, vcs, seqs = self.acts, self.vcs, self.seqs
        aj = acts[j]
        latest: dict[int, int] = {}
        for x in deps:
            b = acts[x]
            if b != aj and x > latest.get(b, -1):
                latest[b] = x
        for b, i in latest.items():
            s = seqs[i]
            if p >= 0 and vcs[p][b] >= s:
                continue
            if any(x != i and vcs[x][b] >= s for x in chain(deps, after)):
                continue            # not direct: e happens before another predecessor of e'
            self.races += 1
            if self.blocking[j]:
                # e may be what enabled e' (an unlock before a lock): e' may
                # not be able to run first; reverse the earlier steps too
                self._insert(i, j)
                self._walk_back(i, j, p, every=True)
            elif not self._insert(i, j):
                self._walk_back(i, j, p)

    def _walk_back(self, i: int, j: int, p: int, every: bool = False) -> None:
        """Step 2c: the race (i, j) cannot be reversed at i; reverse an
        earlier step dependent with j instead (the latest one that can be,
        or with ``every``, each one)."""
        acts, fps, ticks, vcs, seqs = self.acts, self.fps, self.ticks, self.vcs, self.seqs
        aj = acts[j]
        fj, tj = fps[j], ticks[j] if j < len(ticks) else WILD
        for k in range(i - 1, -1, -1):
            b = acts[k]
            if b == aj or (p >= 0 and vcs[p][b] >= seqs[k]):
                continue
            if not _dep(fps[k], ticks[k], fj, tj):
                continue
            if self._insert(k, j) and not every:
                return

    def _insert(self, i: int, j: int) -> bool:
        """Steps 2a/2b for the reversal of event i with event j: True if
        covered or added, False if no initial can run at i's node."""
        acts, vcs, seqs = self.acts, self.vcs, self.seqs
        node = self.stack[i]
        ai, si = acts[i], seqs[i]
        firsts: list[tuple[int, int]] = []
        seen: set[int] = set()
        initials: list[int] = []
        for k in chain(range(i + 1, j), (j,)):
            vk = vcs[k]
            if k != j and vk[ai] >= si:
                continue            # happens after e: not in notdep(e, E)
            b = acts[k]
            if b in seen:
                continue
            seen.add(b)
            if all(vk[c] < sc for c, sc in firsts):
                initials.append(b)
            firsts.append((b, seqs[k]))
        for q in initials:
            if q in node.backtrack or q in node.sleep:
                return True
        runnable = [q for q in initials if q in node.enabled]
        if not runnable:
            return False
        q = acts[j] if acts[j] in runnable else runnable[0]
        node.backtrack.add(q)
        self.added += 1
        return True

    def exhausted(self) -> bool:
        return self._exhausted
