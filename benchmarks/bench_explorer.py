"""Explorer throughput: schedules per second on the memory-manager races,
and the ratio to another checkout measured side by side.

    python benchmarks/bench_explorer.py                       # fault-vs-munmap@speculative
    python benchmarks/bench_explorer.py --all                 # every mm scenario x protocol
    python benchmarks/bench_explorer.py --baseline /work/main # ratio to main, side by side
    python benchmarks/bench_explorer.py --synthetic           # the four strategies, 2 x 25 ops

Each measurement runs ``explore(..., strategy="random")`` for a budget of
schedules (``--schedules``, default 3000 for one scenario, 1000 with
``--all``: what ``specfault check --strategy random --schedules N`` does)
in a fresh process, and times it with the process's CPU clock as well as
the wall clock: on a machine other jobs load, CPU time is the steadier of
the two.  With ``--baseline DIR`` the same measurement runs with
``PYTHONPATH=DIR/src`` (the other checkout's code) and with this
checkout's, alternately, ``--rounds`` times; the ratio printed is the
median over rounds of (this / baseline) — side by side, so load that comes
and goes hits both.  Nothing is asserted on wall time.

``--split``: where one schedule's time goes, in this checkout — the same
run with the per-step invariant, the final check, or both switched off
(µs per schedule, CPU clock, median of ``--rounds``).

``--synthetic``: two threads of 25 ops each (a spinlock-protected counter,
52 steps per schedule) under each strategy — the engine's own overhead,
without the model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------- one process
def _worker(pairs: list[str], schedules: int, seed: int) -> list[dict[str, Any]]:
    """Measure each ``spec@protocol`` in this process (whichever checkout
    PYTHONPATH points to); one JSON line per pair on stdout."""
    from specfault.check.explore import explore
    from specfault.check.scenarios import build

    out = []
    for pair in pairs:
        spec, _, protocol = pair.partition("@")
        sc = build(spec, protocol)
        explore(sc, strategy="random", max_schedules=min(100, schedules), budget_seconds=None,
                seed=seed + 10**6)           # warm up (imports, caches, first builds)
        c0, w0 = time.process_time(), time.perf_counter()
        res = explore(sc, strategy="random", max_schedules=schedules, budget_seconds=None, seed=seed)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        out.append({"pair": pair, "schedules": res.schedules, "steps": res.steps, "ok": res.ok,
                    "cpu": cpu, "wall": wall})
    return out


def _measure(src: Path, pairs: list[str], schedules: int, seed: int) -> dict[str, dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--schedules", str(schedules),
           "--seed", str(seed), *pairs]
    got = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return {r["pair"]: r for r in json.loads(got)}


def _all_pairs() -> list[str]:
    from specfault.check.scenarios import SPECS

    return [f"{s.name}@{p}" for s in SPECS for p in s.protocols]


def _rate(r: dict[str, Any], clock: str) -> float:
    return float(r["schedules"] / r[clock]) if r[clock] > 0 else float("inf")


def mm(args: argparse.Namespace) -> int:
    pairs = args.pairs or (_all_pairs() if args.all else ["fault-vs-munmap@speculative"])
    schedules = args.schedules or (1000 if args.all else 3000)
    mine = HERE / "src"
    base = Path(args.baseline).resolve() / "src" if args.baseline else None
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
          f"random strategy, {schedules} schedules per pair, seed {args.seed}; "
          f"{args.rounds} round(s)" + (f"; baseline {base.parent}" if base else ""))
    rounds: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for i in range(args.rounds):
        print(f"round {i + 1}/{args.rounds}...", file=sys.stderr, flush=True)
        # alternate which goes first, so a trend in the load hits both alike
        if base is not None and i % 2:
            b = _measure(base, pairs, schedules, args.seed)
            m = _measure(mine, pairs, schedules, args.seed)
        else:
            m = _measure(mine, pairs, schedules, args.seed)
            b = _measure(base, pairs, schedules, args.seed) if base is not None else None
        rounds.append((m, b))
    clock = args.clock
    head = f"{'scenario@protocol':42s} {'steps/sch':>9s} {'sched/s':>8s}"
    if base is not None:
        head += f" {'baseline':>8s} {'ratio':>6s}  (min..max over rounds)"
    print(head)
    ratios = []
    for pair in pairs:
        mr = [_rate(m[pair], clock) for m, _ in rounds]
        steps = rounds[0][0][pair]["steps"] / max(rounds[0][0][pair]["schedules"], 1)
        line = f"{pair:42s} {steps:9.1f} {statistics.median(mr):8.0f}"
        if base is not None:
            br = [_rate(b[pair], clock) for _, b in rounds if b is not None]
            rr = [x / y for x, y in zip(mr, br, strict=True)]
            r = statistics.median(rr)
            ratios.append(r)
            same = all(m[pair]["steps"] == b[pair]["steps"] for m, b in rounds if b is not None)
            line += (f" {statistics.median(br):8.0f} {r:5.2f}x  ({min(rr):.2f}..{max(rr):.2f})"
                     + ("" if same else "  STEPS DIFFER"))
        if not all(m[pair]["ok"] for m, _ in rounds):
            line += "  VIOLATION FOUND"
        print(line)
    if len(ratios) > 1:
        print(f"{'geometric mean of the ratios':42s} {'':9s} {'':8s} {'':8s} "
              f"{statistics.geometric_mean(ratios):5.2f}x  (min {min(ratios):.2f}, max {max(ratios):.2f})")
    print(f"(rates from the process's {'CPU' if clock == 'cpu' else 'wall'} clock)")
    return 0


# ------------------------------------------------------------- split
def split(args: argparse.Namespace) -> int:
    """µs per schedule with the scenario's properties on and off."""
    from specfault.check.explore import explore
    from specfault.check.scenarios import build

    pairs = args.pairs or ["fault-vs-munmap@speculative"]
    schedules = args.schedules or 1000
    print(f"python {platform.python_version()}; random strategy, {schedules} schedules, "
          f"{args.rounds} round(s); CPU µs per schedule (median)")
    print(f"{'scenario@protocol':36s} {'all':>7s} {'-invariant':>10s} {'-check':>7s} {'-both':>7s}"
          f"   restore+steps  invariant  final check")
    for pair in pairs:
        spec, _, protocol = pair.partition("@")
        sc = build(spec, protocol)
        inv, chk = sc.invariant, sc.check
        explore(sc, strategy="random", max_schedules=100, budget_seconds=None, seed=10**6)
        cols: dict[str, list[float]] = {"all": [], "inv": [], "chk": [], "both": []}
        for _ in range(args.rounds):
            for key in cols:
                sc.invariant = None if key in ("inv", "both") else inv
                sc.check = None if key in ("chk", "both") else chk
                c0 = time.process_time()
                explore(sc, strategy="random", max_schedules=schedules, budget_seconds=None, seed=args.seed)
                cols[key].append((time.process_time() - c0) / schedules * 1e6)
        m = {k: statistics.median(v) for k, v in cols.items()}
        print(f"{pair:36s} {m['all']:7.0f} {m['inv']:10.0f} {m['chk']:7.0f} {m['both']:7.0f}"
              f"   {m['both']:13.0f}  {m['all'] - m['inv']:9.0f}  {m['all'] - m['chk']:11.0f}")
    return 0


# ------------------------------------------------------------- synthetic
def synthetic(args: argparse.Namespace) -> int:
    from specfault.check import Scenario, Thread, explore
    from specfault.check.litmus import Shared
    from specfault.runtime import Load, Store, Work
    from specfault.sync import SpinLock

    def setup(env: Any) -> Shared:
        return Shared(name="bench", n=0, a=0, b=0, lock=SpinLock("ptl"))

    def thread(mine: str) -> Any:
        async def body(st: Shared) -> None:
            for _ in range(5):                  # 5 x 5 ops = 25 ops
                await Work("fault")
                await st.lock.lock()
                n = await Load(st, "n")
                await Store(st, "n", n + 1)
                await st.lock.unlock()
            await Store(st, mine, 1)
        return body

    def check(st: Shared) -> str | None:
        return None if st.n == 10 else f"lost update: {st.n}"

    sc = Scenario("bench.two-threads", setup, [Thread("T0", thread("a")), Thread("T1", thread("b"))],
                  check=check, rcu=False)
    print(f"python {platform.python_version()} on {platform.machine()}; scenario {sc.name}")
    runs: list[tuple[str, dict[str, Any]]] = [
        ("random", {"strategy": "random"}),
        ("pct (d=3)", {"strategy": "pct", "pct_depth": 3}),
        ("dfs (<=2 preemptions)", {"strategy": "dfs", "max_preemptions": 2, "reduction": "none"}),
        ("dfs + sleep sets (unbounded)", {"strategy": "dfs", "max_preemptions": None, "reduction": "sleep"}),
    ]
    for label, over in runs:
        res = explore(sc, budget_seconds=None, max_schedules=args.schedules or 2000, **over)
        if not res.ok:
            print(res.report)
            return 1
        steps = res.steps / max(res.schedules, 1)
        extra = " (exhausted)" if res.exhausted else ""
        print(f"{label:30s} {res.schedules:8d} schedules in {res.elapsed:5.2f}s = "
              f"{res.rate():8.0f} schedules/s, {steps:5.1f} steps/schedule{extra}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="*", help="spec@protocol pairs (default: fault-vs-munmap@speculative)")
    ap.add_argument("--all", action="store_true", help="every registered mm scenario x protocol")
    ap.add_argument("--schedules", type=int, default=0, help="schedules per pair (3000; 1000 with --all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="measurements per side (the median is printed)")
    ap.add_argument("--baseline", metavar="DIR", help="another checkout (its src/) to compare with")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--synthetic", action="store_true", help="the engine alone, per strategy")
    ap.add_argument("--split", action="store_true", help="time per schedule with properties on/off")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.schedules < 0 or args.rounds < 1:
        ap.error("--schedules must be >= 0 and --rounds >= 1")
    if args.baseline and not (Path(args.baseline) / "src" / "specfault").is_dir():
        ap.error(f"--baseline {args.baseline}: no src/specfault there")
    if args.worker:
        print(json.dumps(_worker(args.pairs, args.schedules, args.seed)))
        return 0
    if args.synthetic:
        return synthetic(args)
    if args.split:
        return split(args)
    return mm(args)


if __name__ == "__main__":
    sys.exit(main())
