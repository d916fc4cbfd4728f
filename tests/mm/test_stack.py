"""Stacks: a VM_GROWSDOWN VMA grows on a fault below it (expand_stack), up
to RLIMIT_STACK and never within stack_guard_gap of the accessible mapping
below; the gap also keeps hinted mmaps away; mprotect(PROT_GROWSDOWN)
reaches down to the stack's start.  Each scenario runs on the model and on
this machine's kernel, and their layouts, VmFlags and signals must agree.

    window:  ...  [ lower ]  <- stack_guard_gap ->  [ stack ]  ...
                             faults here grow the stack down
"""

from __future__ import annotations

import errno
import faulthandler
import os
import signal
from typing import Any

import pytest
from hostkit import HOST_OK, Host, host_errno, layout, run_host_forked, vmflags

import specfault as sf
from specfault.mm.mmap import STACK_GUARD_GAP

P = 4096
RW = sf.PROT_READ | sf.PROT_WRITE
PA = sf.MAP_PRIVATE | sf.MAP_ANONYMOUS | sf.MAP_FIXED
GD = PA | sf.MAP_GROWSDOWN
GAP = STACK_GUARD_GAP // P                # 256 pages
MODEL_BASE = 0x200000000000

needs_host = pytest.mark.skipif(not HOST_OK, reason="needs root on Linux for the host kernel")


def touch(h: Any, addr: int, kind: str = "write") -> str:
    """Access one byte: "ok", or the signal that killed the access.  On the
    host the access first runs in a forked child (it may die there); only
    if it survives is it repeated here."""
    if not isinstance(h, Host):
        try:
            h.access(addr, kind)
        except sf.SegmentationFault as e:
            return f"SIGSEGV/{e.si_code}"
        return "ok"
    pid = os.fork()
    if pid == 0:
        try:
            faulthandler.disable()          # the child may die of SIGSEGV: no traceback
            h.access(addr, kind)
        finally:
            os._exit(0)
    _, st = os.waitpid(pid, 0)
    if os.WIFSIGNALED(st):
        return f"{signal.Signals(os.WTERMSIG(st)).name}/?"
    h.access(addr, kind)
    return "ok"


def observe(h: Any, base: int) -> tuple[Any, Any]:
    smaps = h.smaps()
    return layout(h.maps(), base), vmflags(smaps, base)


def both(scenario: Any) -> tuple[Any, Any]:
    """(model result, host result); the host's si_code is not observable
    from a dead child, so signals compare by name."""
    m = sf.Machine()
    p = m.spawn()
    model = scenario(p, MODEL_BASE)
    m.check()
    host = run_host_forked(scenario)

    def strip(x: Any) -> Any:
        if isinstance(x, str) and x.startswith("SIG"):
            return x.split("/")[0]
        if isinstance(x, (list, tuple)):
            return type(x)(strip(y) for y in x)
        return x
    return strip(model), strip(host)


def grows(h: Any, b: int) -> Any:
    """A 4-page MAP_GROWSDOWN stack; faults 1 and 20 pages below it."""
    top = b + 600 * P
    h.mmap(top - 4 * P, 4 * P, RW, GD)
    out = [observe(h, b)]
    out.append(touch(h, top - 5 * P))                   # the page just below
    out.append(observe(h, b))
    out.append(touch(h, top - 30 * P, "read"))         # further down, a read
    out.append(observe(h, b))
    out.append(h.pagemap(top - 30 * P).present)
    out.append(h.pagemap(top - 29 * P).present)        # grown over, not touched
    return out


@needs_host
def test_growsdown_mapping_grows_on_faults_below() -> None:
    model, host = both(grows)
    assert model == host
    # the stack grew page-exactly to the faulting page, and keeps "gd"
    (lay, flags) = model[4]
    assert lay[-1][0] == 600 - 30 and "gd" in flags[-1][2]
    assert model[1] == model[3] == "ok"


def guard_gap(h: Any, b: int) -> Any:
    """An accessible page below a stack: growth stops stack_guard_gap above
    it (SIGSEGV); a PROT_NONE page below does not keep the gap."""
    out = []
    top = b + (GAP + 100) * P
    h.mmap(b, P, RW, PA)                                # lower, accessible: [b, b+P)
    h.mmap(top - P, P, RW, GD)
    out.append(touch(h, b + P + (GAP - 1) * P))         # inside the gap: refused
    out.append(observe(h, b))
    out.append(touch(h, b + P + GAP * P))               # exactly at the gap: allowed
    out.append(observe(h, b))
    h.mprotect(b, P, sf.PROT_NONE)                      # not accessible: no gap kept
    out.append(touch(h, b + 2 * P))
    out.append(observe(h, b))
    return out


@needs_host
def test_guard_gap_stops_growth() -> None:
    model, host = both(guard_gap)
    assert model == host
    assert model[0] == "SIGSEGV" and model[2] == "ok" and model[4] == "ok"


def rlimit(h: Any, b: int) -> Any:
    """A stack may not grow past RLIMIT_STACK (8 MiB here)."""
    top = b + 4096 * P
    h.mmap(top - P, P, RW, GD)
    lim = 8 << 20
    return [touch(h, top - lim), observe(h, b), touch(h, top - lim - P), observe(h, b)]


@needs_host
def test_rlimit_stack_bounds_growth() -> None:
    import resource

    if resource.getrlimit(resource.RLIMIT_STACK)[0] != 8 << 20:
        pytest.skip("the host's RLIMIT_STACK is not 8 MiB")
    model, host = both(rlimit)
    assert model == host
    assert model[0] == "ok" and model[2] == "SIGSEGV"


def hints(h: Any, b: int) -> Any:
    """mmap's hint must leave the guard gap below a stack free."""
    top = b + (GAP + 64) * P
    h.mmap(top - P, P, RW, GD)
    within = h.mmap(top - P - 4 * P, P, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    below = h.mmap(top - P - (GAP + 1) * P, P, RW, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    return [within == top - 5 * P, below - b]


@needs_host
def test_hint_keeps_out_of_the_guard_gap() -> None:
    model, host = both(hints)
    assert model == host
    assert model == [False, 63 * P - P]


def growsdown_mprotect(h: Any, b: int) -> Any:
    """PROT_GROWSDOWN changes the stack from its start; elsewhere EINVAL."""
    h.mmap(b + 10 * P, 8 * P, RW, GD)
    h.mmap(b + 30 * P, 4 * P, RW, PA)
    out = [host_errno(lambda: h.mprotect(b + 14 * P, P, sf.PROT_READ | sf.PROT_GROWSDOWN)),
           observe(h, b),
           host_errno(lambda: h.mprotect(b + 30 * P, P, sf.PROT_READ | sf.PROT_GROWSDOWN)),
           host_errno(lambda: h.mprotect(b + 30 * P, P, sf.PROT_READ | sf.PROT_GROWSUP)),
           host_errno(lambda: h.mprotect(b + 20 * P, P, sf.PROT_READ | sf.PROT_GROWSUP)),
           host_errno(lambda: h.mprotect(b + 20 * P, 12 * P, sf.PROT_READ | sf.PROT_GROWSDOWN)),
           observe(h, b)]
    return out


@needs_host
def test_mprotect_growsdown() -> None:
    model, host = both(growsdown_mprotect)
    assert model == host
    assert model[0] == 0 and model[1][0][0] == (10, 15, "r--p", 0)
    assert model[2] == model[3] == errno.EINVAL and model[4] == errno.ENOMEM


def test_expand_stack_under_every_protocol() -> None:
    """Two threads: the speculative and per-VMA paths find no VMA below the
    stack and fall back to mmap_lock, which grows it."""
    for proto in ("classic", "speculative", "pervma", "dufour"):
        m = sf.Machine(fault_protocol=proto)
        p = m.spawn()
        t = p.thread()
        top = MODEL_BASE + 100 * P
        p.mmap(top - P, P, RW, GD)
        t.write(top - 10 * P, b"x")
        assert p.read(top - 10 * P, 1) == b"x"
        assert p.mm.find_vma(top - 10 * P).vm_start == top - 10 * P
        m.check()
