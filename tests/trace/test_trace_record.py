"""Recording: perf script's lines parsed, records turned into a trace, and a
live recording where perf works here."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest

from specfault.trace import format as fmt
from specfault.trace.perf import PerfUnavailable, check_perf, parse_line, parse_script
from specfault.trace.record import Converter, record
from specfault.trace.tracer import Launched

# lines as perf 6.1 prints them (perf script -F pid,tid,time,event,trace ... --ns)
LINES = """\
22547/22547  4893.300000000:      syscalls:sys_enter_execve: filename: 0x7ffce1c5c250, argv: 0x7ffce1c5c518, envp: 0x7ffce1c5c530
22547/22547  4893.306100000: PERF_RECORD_MMAP2 22547/22547: [0x7ffffffde000(0x21000) @ 0x7ffffffde000 00:00 0 0]: rw-p [stack]
22547/22547  4893.306110000: PERF_RECORD_MMAP2 22547/22547: [0x400000(0x1f000) @ 0 fe:00 260811 0]: r--p /usr/bin/python3.11
22547/22547  4893.306120000:     exceptions:page_fault_kernel: address=0xa84278 ip=elf_load error_code=0x2
22547/22547  4893.306130000: PERF_RECORD_MMAP2 22547/22547: [0x7ffff7fc8000(0x2000) @ 0 00:00 0 0]: r-xp [vdso]
22547/22547  4893.306140000: PERF_RECORD_COMM exec: python3:22547/22547
22547/22547  4893.306200000:      sched:sched_process_exec: filename=/usr/bin/python3 pid=22547 old_pid=22547
22547/22547  4893.306300000:         syscalls:sys_exit_execve: 0x0
22547/22547  4893.306400000:       exceptions:page_fault_user: address=0x7ffff7fe4b70 ip=0x7ffff7fe4b70 error_code=0x14
22547/22547  4893.306500000:        syscalls:sys_enter_openat: dfd: 0xffffff9c, filename: 0x7ffff7ff1c6f, flags: 0x00080000, mode: 0x00000000
22547/22547  4893.306510000:         syscalls:sys_exit_openat: 0x3
22547/22547  4893.306600000:        syscalls:sys_enter_mmap: addr: 0x00000000, len: 0x00010000, prot: 0x00000003, flags: 0x00000001, fd: 0x00000003, off: 0x00000000
22547/22547  4893.306610000:         syscalls:sys_exit_mmap: 0xfffffffffffffff3
22547/22547  4893.306700000:        syscalls:sys_enter_mmap: addr: 0x00000000, len: 0x00009767, prot: 0x00000001, flags: 0x00000002, fd: 0x00000003, off: 0x00000000
22547/22547  4893.306705000: PERF_RECORD_MMAP2 22547/22547: [0x7ffff7fb8000(0xa000) @ 0 fe:00 1196043 1558090631]: r--p /etc/ld.so.cache
22547/22547  4893.306710000:         syscalls:sys_exit_mmap: 0x7ffff7fb8000
22547/22547  4893.306800000:       exceptions:page_fault_user: address=0x10 ip=0x401000 error_code=0x4
22547/22547  4893.306801000:           signal:signal_generate: sig=11 errno=0 code=1 comm=VM Thread pid=22547 grp=0 res=0
22547/22547  4893.306900000:        syscalls:sys_enter_clone3: uargs: 0x7fffffffa140, size: 0x00000058
22547/22547  4893.306910000: PERF_RECORD_FORK(22547:22548):(22547:22547)
22547/22547  4893.306920000:         sched:sched_process_fork: comm=python3 pid=22547 child_comm=python3 child_pid=22548
22547/22548  4893.306930000:         syscalls:sys_exit_clone3: 0x0
22547/22547  4893.306940000:         syscalls:sys_exit_clone3: 0x5614
22547/22548  4893.307000000:       exceptions:page_fault_user: address=0x7ffff7fb8100 ip=0x401000 error_code=0x4
22547/22548  4893.307100000:         sched:sched_process_exit: comm=VM Periodic Tas pid=22548 prio=120 group_dead=false
22547/22547  4893.307200000:         sched:sched_process_exit: comm=python3 pid=22547 prio=120 group_dead=true
"""


def test_parse_lines() -> None:
    raws = [parse_line(line) for line in LINES.splitlines()]
    assert all(r is not None for r in raws)
    mm = raws[2]
    assert mm.kind == "MMAP2" and mm.data == (0x400000, 0x41F000, "r--p", 0, "fe:00", 260811,
                                                 "/usr/bin/python3.11")
    assert raws[12].kind == "sys_exit_mmap" and raws[12].data == -13          # EACCES
    assert raws[11].data == [0, 0x10000, 3, 1, 3, 0]
    assert raws[3].data[0] == 0xA84278 and raws[3].data[1] == -1               # ip=elf_load
    sig = raws[17]
    assert sig.kind == "signal_generate" and sig.data == (11, 1, 22547, 0)     # comm has a space
    assert raws[24].data == (22548, False)
    assert raws[6].data == ("/usr/bin/python3", 22547, 22547)
    assert raws[19].kind == "FORK" and (raws[19].pid, raws[19].tid) == (22547, 22548)
    # raw_syscalls, what the recorder asks perf for: the number, six
    # arguments (kept to the syscall's own), the result in decimal
    raw = parse_line("22547/22547  4893.3: raw_syscalls:sys_enter: NR 9 (0, 2000, 3, 22, ffffffff, 0)"
                     .replace("4893.3", "4893.300000000"))
    assert raw is not None and raw.kind == "sys_enter_mmap" and raw.data == [0, 0x2000, 3, 0x22,
                                                                             0xFFFFFFFF, 0]
    raw = parse_line("22547/22547  4893.300000000: raw_syscalls:sys_enter: NR 11 (7f00, 1000, 0, 0, 0, 0)")
    assert raw is not None and raw.kind == "sys_enter_munmap" and raw.data == [0x7F00, 0x1000]
    raw = parse_line("22547/22547  4893.300000000:  raw_syscalls:sys_exit: NR 9 = -12")
    assert raw is not None and raw.kind == "sys_exit_mmap" and raw.data == -12
    assert parse_line("22547/22547  4893.300000000: raw_syscalls:sys_exit: NR 0 = 5") is None
    assert parse_line("garbage") is None
    assert parse_line("  0/0 [000] 0.000000000: PERF_RECORD_MMAP -1/0: [0xffffffff81000000(0x1277288) "
                      "@ 0xffffffff81000000]: x [kernel.kallsyms]_text") is None


def _convert(lines: str) -> fmt.Trace:
    launched = Launched(pid=22547, status=0, traced=True,
                        clones={22548: {"flags": 0x3D0F00, "syscall": "clone3", "parent": 22547}})
    conv = Converter(launched)
    conv.feed(parse_script(lines.splitlines()))
    return conv.finish({"format": fmt.FORMAT, "version": fmt.VERSION}, [])


def test_converter() -> None:
    tr = _convert(LINES)
    kinds = [e["k"] for e in tr.events]
    assert kinds == ["exec", "fault", "sys", "sys", "fault", "clone", "fault", "exit", "exit"]
    ex = tr.events[0]
    assert ex["t"] == 0 and ex["path"] == "/usr/bin/python3"
    assert [m[5] for m in ex["maps"]] == ["[stack]", "", "[vdso]"]
    assert ex["kfaults"] == [[0xA84278, 2]]
    failed, ok = tr.events[2], tr.events[3]
    # the failed mmap names its file through the fd table: the same open
    # file description a later successful mmap showed to be ld.so.cache
    assert failed["ret"] == -13 and failed["fmode"] == 0
    assert failed["file"] == ok["file"] == ex["maps"][1][4] + 1
    assert tr.files[ok["file"]]["name"] == "/etc/ld.so.cache"
    assert ok["maps"] == [[0x7FFFF7FB8000, 0x7FFFF7FC2000, "r--p", 0, ok["file"], ""]]
    assert tr.events[4]["sig"] == [11, 1]                 # SIGSEGV tied to its fault
    clone = tr.events[5]
    assert clone["child"] == 22548 and clone["child_pid"] == 22547 and clone["flags"] == 0x3D0F00
    assert tr.tasks[22548]["pid"] == 22547
    assert tr.events[7]["group_dead"] is False


def test_trace_roundtrip(tmp_path) -> None:
    tr = _convert(LINES)
    path = str(tmp_path / "t.trace.gz")
    fmt.save(tr, path)
    back = fmt.load(path)
    assert back.events == tr.events and back.files == tr.files and back.tasks == tr.tasks
    # damaged files are refused naming the line
    raw = gzip.decompress(open(path, "rb").read()).splitlines()
    bad = raw[:3] + [b'{"k":"fault","t":5}'] + raw[3:]
    with pytest.raises(fmt.TraceError, match="line 4"):
        fmt.parse_lines(bad)
    with pytest.raises(fmt.TraceError, match="version"):
        fmt.parse_lines([json.dumps({"k": "header", "format": fmt.FORMAT, "version": 99}).encode()])
    with pytest.raises(fmt.TraceError, match="not gzip"):
        fmt.loads(b"hello")


def _perf_here() -> str | None:
    try:
        check_perf()
    except PerfUnavailable as exc:
        return str(exc)
    return None


@pytest.mark.skipif(_perf_here() is not None, reason=f"perf cannot record here: {_perf_here()}")
def test_record_live(tmp_path) -> None:
    """Record /bin/true: its exec layout, its faults, its final layout."""
    true = shutil.which("true")
    assert true
    out = str(tmp_path / "true.trace.gz")
    rec = record([true], out)
    assert rec.status == 0 and os.path.getsize(out) == rec.bytes
    tr = fmt.load(out)
    assert tr.header["lost"] == 0
    ex = tr.events[0]
    assert ex["k"] == "exec" and any(m[5] == "[stack]" for m in ex["maps"])
    assert tr.counts().get("fault", 0) > 10
    assert len(tr.finals) == 1 and tr.finals[0]["present"]
    stack = [m for m in tr.finals[0]["maps"] if m[5] == "[stack]"]
    assert stack and stack[0][1] == (1 << 47) - 4096        # ASLR off: the stack at TASK_SIZE
    names = {f["name"] for f in tr.files.values()}
    assert os.path.realpath(true) in names or true in names
    assert all(f["size"] is not None for f in tr.files.values() if f["name"] == true)
    # and the model agrees with what the host did
    from specfault.trace.replay import iter_lines, replay

    res = replay(tr)
    assert res.agreed, "\n".join(iter_lines(res, tr.files))


@pytest.mark.skipif(_perf_here() is not None, reason=f"perf cannot record here: {_perf_here()}")
def test_ctrl_c_record_writes_a_partial_trace(tmp_path) -> None:
    """Ctrl-C reaches the recorded command (as it would without us); what
    was recorded until then is written, marked partial, exit 130."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from clikit import interrupt

    out = tmp_path / "sleep.trace.gz"
    r = interrupt(["trace", "record", "-o", str(out), "--", "sleep", "30"],
                  lambda o, e: "running sleep" in e, timeout=60, settle=1.0)
    assert r.code == 130, (r.out, r.err)
    assert "partial" in r.out and "Traceback" not in r.out + r.err
    tr = fmt.load(str(out))
    assert tr.header["partial"] is True and tr.header["exit_status"] == -2     # SIGINT
    assert tr.events[0]["k"] == "exec"
