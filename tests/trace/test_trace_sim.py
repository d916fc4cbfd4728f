"""Simulating traces: each task a thread with its recorded CPU and blocked
time, the trace's cross-thread order kept, per-protocol figures; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specfault.trace import format as fmt
from specfault.trace.perf import parse_script
from specfault.trace.record import Converter
from specfault.trace.sim import plan, simulate
from specfault.trace.tracer import Launched

HERE = Path(__file__).resolve()
CORPUS = HERE.parents[1] / "trace_corpus"
SRC = str(HERE.parents[2] / "src")
sys.path.insert(0, str(HERE.parents[1] / "cli"))

P = 4096
ANON = 0x22            # MAP_PRIVATE | MAP_ANONYMOUS


def two_tasks(run_before_mmap: int) -> fmt.Trace:
    """Task 1 execs, clones task 2, computes ``run_before_mmap`` ns, mmaps
    a region; task 2 write-faults in that region right after (on the host)."""
    tr = fmt.load(str(CORPUS / "python3-c-pass.trace.gz"))
    root = tr.events[0]["tid"]
    exec_ev = dict(tr.events[0])
    base = 0x7FFF00000000
    evs = [exec_ev,
           {"k": "clone", "t": 1000, "tid": root, "child": root + 1, "child_pid": root,
            "flags": 0x3D0F00, "syscall": "clone3"},
           {"k": "sys", "t": 2000, "tid": root, "name": "mmap", "run": run_before_mmap,
            "args": [base, 4 * P, 3, ANON | 0x10, 0xFFFFFFFF, 0], "ret": base, "dt": 500},
           {"k": "fault", "t": 3000, "tid": root + 1, "addr": base + P, "err": 6, "user": True,
            "ip": 0},
           {"k": "exit", "t": 4000, "tid": root + 1},
           {"k": "exit", "t": 5000, "tid": root}]
    tr.events = evs
    tr.tasks = {root: {"tid": root, "pid": root, "comm": "a"},
                root + 1: {"tid": root + 1, "pid": root, "comm": "b"}}
    tr.finals = []
    return tr


def test_plan_orders_a_fault_after_the_mmap_of_its_region() -> None:
    tr = two_tasks(0)
    steps, root = plan(tr)
    mmap_step = steps[root][2]
    fault_step = steps[root + 1][0]
    assert mmap_step.mark is not None and fault_step.deps == [mmap_step.mark]
    assert not steps[root][1].deps                  # the clone waits for nobody


def test_the_order_is_kept_in_the_simulation() -> None:
    """Task 1 computes 1 ms before its mmap; task 2 faults in the region at
    once: it must wait for the mmap (on the host it came after it), and
    fault without a signal."""
    tr = two_tasks(1_000_000)
    run = simulate(tr, "classic", 2)
    assert run.mismatches == 0
    assert run.result.faults == 1 + len(tr.events[0]["kfaults"])     # and the exec's own
    assert run.dep_wait_us > 900
    waits = [t for t in run.timeline if t[1] == "order"]
    assert waits and waits[0][3] >= 1_000_000


def test_cpu_and_blocked_time_between_events() -> None:
    """The recorder gives each event the time its task ran and was blocked
    since its previous event, from perf's switch records; time preempted
    is left to the simulator."""
    lines = """\
7/7  100.000000000:         sched:sched_process_exec: filename=/bin/x pid=7 old_pid=7
7/7  100.000100000: PERF_RECORD_SWITCH OUT
7/7  100.000300000: PERF_RECORD_SWITCH IN
7/7  100.000400000: PERF_RECORD_SWITCH OUT preempt
7/7  100.000900000: PERF_RECORD_SWITCH IN
7/7  100.001000000:       exceptions:page_fault_user: address=0x10000 ip=0x401000 error_code=0x6
7/7  100.001500000:        syscalls:sys_enter_munmap: addr: 0x00010000, len: 0x00001000
7/7  100.001600000: PERF_RECORD_SWITCH OUT
7/7  100.001900000: PERF_RECORD_SWITCH IN
7/7  100.002000000:         syscalls:sys_exit_munmap: 0x0
7/7  100.002500000:         sched:sched_process_exit: comm=x pid=7 prio=120 group_dead=true
"""
    conv = Converter(Launched(pid=7, status=0, traced=True))
    conv.feed(parse_script(lines.splitlines()))
    tr = conv.finish({"format": fmt.FORMAT, "version": fmt.VERSION}, [])
    fault, munmap, exit_ = tr.events[1:]
    assert (fault["run"], fault["wait"]) == (300_000, 200_000)    # 100+100+100 on, 200 off
    assert munmap["run"] == 500_000 and "wait" not in munmap
    assert exit_["run"] == 500_000                                # the syscall's own time is not
    assert tr.counts() == {"exec": 1, "fault": 1, "sys:munmap": 1, "exit": 1}


@pytest.mark.parametrize("protocol", ["classic", "speculative", "pervma", "dufour"])
def test_corpus_simulates(protocol: str) -> None:
    tr = fmt.load(str(CORPUS / "mtmap.trace.gz"))
    run = simulate(tr, protocol, 4)
    assert run.mismatches == 0 and not run.unsupported
    assert run.tasks == len(tr.tasks) == 5
    r = run.result
    assert r.faults > 500 and r.syscalls > 150 and r.wall_us > 0
    assert r.fault_lat["n"] == len([t for t in run.timeline if t[1] == "fault"])
    # the recorded CPU time is spent: the run lasts at least the longest task's
    run_ns = {}
    for ev in tr.events:
        run_ns[ev["tid"]] = run_ns.get(ev["tid"], 0) + ev.get("run", 0)
    assert r.wall_us * 1e3 >= max(run_ns.values())
    if protocol == "pervma":
        assert r.counters["vma_lock_success"] > 0


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "specfault.cli", "trace", *argv],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_sim(tmp_path) -> None:
    plot = tmp_path / "t.png"
    out = _cli("sim", str(CORPUS / "sh-pipe.trace.gz"), "--cpus", "2,8", "--protocols",
               "classic,pervma", "--json", "--plot", str(plot))
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [(r["protocol"], r["cpus"]) for r in res["runs"]] == [
        ("classic", 2), ("pervma", 2), ("classic", 8), ("pervma", 8)]
    assert res["host"]["cpus"] == 2 and res["host"]["duration_ms"] > 0
    assert all(r["mismatches"] == 0 and r["tasks"] == 3 for r in res["runs"])
    assert plot.stat().st_size > 10_000
    text = _cli("sim", str(CORPUS / "sh-pipe.trace.gz"), "--cpus", "2")
    assert text.returncode == 0 and "completion" in text.stdout and "pervma" in text.stdout


@pytest.mark.parametrize("argv,what", [
    (["sim", "CORPUS", "--cpus", "0"], "--cpus"),
    (["sim", "CORPUS", "--protocols", "classic,spec"], "unknown protocol 'spec'"),
    (["sim", "CORPUS", "--plot", "/nonexistent/dir/x.png"], "does not exist"),
    (["sim", "CORPUS", "--plot", "x.nope"], "extension"),
])
def test_cli_sim_bad_input(argv: list[str], what: str) -> None:
    argv = [str(CORPUS / "mtmap.trace.gz") if a == "CORPUS" else a for a in argv]
    out = _cli(*argv)
    assert out.returncode == 2 and what in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_ctrl_c_sim_prints_partial_results() -> None:
    from clikit import interrupt

    r = interrupt(["trace", "sim", str(CORPUS / "java-version.trace.gz"), "--cpus", "2,8,32"],
                  lambda out, err: "simulate" in err, timeout=120, settle=2.0)
    assert r.code == 130, (r.out[-1000:], r.err[-1000:])
    assert r.latency < 2.0
    assert "partial: interrupted" in r.out and "Traceback" not in r.out + r.err
