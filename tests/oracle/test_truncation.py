"""Truncation and hole punching, pinned against the host kernel, then the
model held to the same record (first_divergence None).

Each test states the kernel's rule it pins (tmpfs: the oracle's files live
in /dev/shm): run on the live kernel (skipped elsewhere, with the reason),
checked by assertions on the host record, and the model must agree step
for step.  File 0 has 8 pages; byte i is 0x50 + i // 4096.
"""

from __future__ import annotations

from helpers import RW, fmap, op, page, prog, touch

from specfault.oracle.compare import first_divergence
from specfault.oracle.model import run_model

PUNCH = ["FALLOC_FL_PUNCH_HOLE", "FALLOC_FL_KEEP_SIZE"]


def both(host_runner, p):
    """The host record (asserted error-free) after checking the model agrees."""
    host = host_runner.run(p)
    assert host["error"] is None, host["error"]
    model = run_model(p)
    assert model["error"] is None, model["error"]
    div = first_divergence(host, model)
    assert div is None, f"model diverges from the host: {div}"
    return [s["result"] for s in host["steps"]], [s["state"] for s in host["steps"]]


def test_truncate_to_zero_unmaps_shared_and_private_cow_pages_then_sigbus(host_runner, model_ready):
    # truncate_pagecache(): unmap_mapping_range(even_cows=1) — the private
    # COWed copy goes too; any access beyond the new EOF is SIGBUS
    res, st = both(host_runner, prog(
        fmap(0, 4, prot=RW, shared=True), fmap(8, 4, prot=RW), touch(1), touch(9, "write", val=0x5a),
        op("ftruncate", file=0, size=0), touch(1), touch(9), touch(9, "write", val=0x5b)))
    assert page(st[3], 0, 9).startswith("Px=")                 # the private copy, anonymous
    assert page(st[4], 0, 1) == page(st[4], 0, 9) == ""       # both unmapped
    assert res[5] == {"signal": "SIGBUS", "si_code": "BUS_ADRERR", "at": "1"}
    assert res[6] == {"signal": "SIGBUS", "si_code": "BUS_ADRERR", "at": "9"}
    assert res[7] == {"signal": "SIGBUS", "si_code": "BUS_ADRERR", "at": "9"}


def test_shrink_zeroes_the_partial_last_page_and_growing_back_reads_zeroes(host_runner, model_ready):
    # shmem_undo_range(): the tail of the new last page is zeroed in place
    # (the page stays mapped); pages wholly beyond are dropped, and growing
    # the file again reads zeroes there
    res, st = both(host_runner, prog(
        fmap(0, 4, prot=RW, shared=True), touch(1), touch(2),
        op("ftruncate", file=0, size=4096 + 100), touch(1, off=96, len=8), touch(2),
        op("ftruncate", file=0, size=3 * 4096), touch(2), op("pread", file=0, off=4096 + 96, len=8)))
    assert page(st[3], 0, 1) != "" and page(st[3], 0, 1) == page(st[2], 0, 1)   # still mapped
    assert res[4] == {"data": "51x4,00x4"}
    assert res[5] == {"signal": "SIGBUS", "si_code": "BUS_ADRERR", "at": "2"}
    assert res[7] == {"data": "00x8"}
    assert res[8] == {"data": "51x4,00x4"}


def test_truncate_to_the_same_size_zeroes_what_a_mapping_wrote_past_eof(host_runner, model_ready):
    # shmem_setattr(): newsize <= oldsize truncates — even when equal
    p = prog(fmap(0, 2, prot=RW, shared=True), touch(1, "write", off=200, val=0x5c),
             op("ftruncate", file=0, size=4096 + 100), touch(1, "write", off=200, val=0x5d),
             op("ftruncate", file=0, size=2 * 4096), touch(1, off=200, len=1),
             op("ftruncate", file=0, size=4096 + 100), touch(1, "write", off=200, val=0x5e),
             op("ftruncate", file=0, size=4096 + 100), op("ftruncate", file=0, size=2 * 4096),
             touch(1, off=200, len=1))
    res, _ = both(host_runner, p)
    assert res[5] == {"data": "5d"}                # growing keeps what was written past EOF
    assert res[10] == {"data": "00"}               # truncating to the same size zeroed it


def test_punch_hole_unmaps_shared_keeps_private_cow_and_zeroes_partial_pages(host_runner, model_ready):
    # shmem_fallocate(PUNCH_HOLE): unmap_mapping_range(even_cows=0); whole
    # pages dropped, the partial edge pages zeroed in place
    res, st = both(host_runner, prog(
        fmap(0, 4, prot=RW, shared=True), fmap(8, 4, prot=RW), touch(1), touch(2), touch(3),
        touch(9, "write", val=0x5a),
        op("fallocate", file=0, off=4096, len=4096 + 50, mode=PUNCH),
        touch(1), touch(9), touch(2), touch(2, off=48, len=4)))
    assert page(st[6], 0, 1) == "" and page(st[6], 0, 9).startswith("Px=")
    assert page(st[6], 0, 2) == page(st[5], 0, 2)                # partial page: stays mapped
    assert res[7] == {"data": "00x8"}
    assert res[8] == {"data": "5a,51x7"}                          # the COWed copy survives
    assert res[9] == {"data": "00x8"}
    assert res[10] == {"data": "00x2,52x2"}


def test_madvise_remove_punches_for_every_mapping_and_errors_elsewhere(host_runner, model_ready):
    res, st = both(host_runner, prog(
        fmap(0, 4, prot=RW, shared=True), fmap(8, 4, shared=True), touch(9),
        op("madvise", page=1, npages=1, advice="MADV_REMOVE"), touch(9),
        fmap(20, 2, prot=RW), op("madvise", page=20, npages=1, advice="MADV_REMOVE"),
        fmap(24, 2, shared=True), op("madvise", page=24, npages=1, advice="MADV_REMOVE")))
    assert res[3] == {"ret": 0}
    assert page(st[3], 0, 9) == ""                               # the other mapping lost it too
    assert res[4] == {"data": "00x8"}
    assert res[6] == {"errno": "EACCES"}                         # private file mapping
    assert res[8] == {"ret": 0}              # PROT_READ, but VM_MAYWRITE: the fd is O_RDWR


def test_o_trunc_truncates_to_zero(host_runner, model_ready):
    res, _ = both(host_runner, prog(fmap(0, 2, shared=True), touch(1), op("otrunc", file=0), touch(1),
                                    op("pwrite", file=0, off=4096, len=1, val=0x5f), touch(1, len=2)))
    assert res[3] == {"signal": "SIGBUS", "si_code": "BUS_ADRERR", "at": "1"}
    assert res[5] == {"data": "5f,00"}


def test_fallocate_errnos_in_linux_order(host_runner, model_ready):
    res, _ = both(host_runner, prog(
        op("fallocate", file=0, off=0, len=0, mode=PUNCH),
        op("fallocate", file=0, off=0, len=4096, mode=["FALLOC_FL_PUNCH_HOLE"]),
        op("fallocate", file=0, off=0, len=4096, mode=["FALLOC_FL_ZERO_RANGE"]),
        op("fallocate", file=0, off=0, len=4096, mode=["FALLOC_FL_COLLAPSE_RANGE"]),
        op("fallocate", file=0, off=0, len=4096, mode=["FALLOC_FL_NO_HIDE_STALE"]),
        op("fallocate", file=0, off=9 * 4096, len=4096, mode=[]),
        op("pread", file=0, off=10 * 4096 - 8, len=16)))
    assert res[:5] == [{"errno": "EINVAL"}] + [{"errno": "ENOTSUP"}] * 4    # EOPNOTSUPP
    assert res[5] == {"ret": 0}
    assert res[6] == {"data": "00x8"}                             # allocation grew the file


# ------------------------------------------------------------------ bad input
def _host_errno(fn, *args):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ctypes.set_errno(0)
    r = getattr(libc, fn)(*[ctypes.c_long(a) for a in args])
    return 0 if r == 0 else ctypes.get_errno()


def _model_errno(call, *args):
    try:
        call(*args)
    except OSError as exc:
        return exc.errno
    return 0


BAD = [  # (syscall, which fd, args after the fd)
    ("ftruncate", "rw", (-1,)), ("ftruncate", "bad", (-1,)), ("ftruncate", "bad", (0,)),
    ("ftruncate", "ro", (0,)), ("ftruncate", "ro", (-5,)), ("ftruncate", "none", (0,)),
    ("fallocate", "bad", (3, -1, 0)), ("fallocate", "ro", (3, 0, 4096)),
    ("fallocate", "ro", (3, -1, 4096)), ("fallocate", "ro", (2, 0, 4096)),
    ("fallocate", "rw", (3, 0, -4096)), ("fallocate", "rw", (0x100, 0, 4096)),
    ("fallocate", "rw", (3, (1 << 63) - 10, 100)), ("fallocate", "rw", (0x18, 0, 4096)),
    ("fallocate", "rw", (0x09, 0, 4096)), ("fallocate", "wo", (3, 0, 4096)),
]


def test_bad_truncate_and_fallocate_give_the_hosts_errno(tmp_path):
    """ftruncate: a negative length EINVAL before the fd is looked at, a bad
    fd EBADF, an fd not open for writing EINVAL; fallocate: bad fd EBADF,
    then offset/len EINVAL, then the mode EOPNOTSUPP, then not writable
    EBADF, then past s_maxbytes EFBIG — each the host's (tmpfs) errno."""
    import os
    import sys

    import pytest

    import specfault as sf

    if sys.platform != "linux" or not os.path.isdir("/dev/shm"):
        pytest.skip("needs Linux with /dev/shm (tmpfs) to compare errnos with the host")
    path = f"/dev/shm/specfault-bad-{os.getpid()}"
    with open(path, "wb") as f:
        f.write(b"x" * 8192)
    host = {"rw": os.open(path, os.O_RDWR), "ro": os.open(path, os.O_RDONLY),
            "wo": os.open(path, os.O_WRONLY), "none": os.open(path, 3), "bad": 999}
    m = sf.Machine()
    m.create_file("/f", b"x" * 8192)
    p = m.spawn()
    model = {"rw": p.open("/f", sf.O_RDWR), "ro": p.open("/f", sf.O_RDONLY),
             "wo": p.open("/f", sf.O_WRONLY), "none": p.open("/f", 3), "bad": 999}
    try:
        for fn, which, args in BAD:
            want = _host_errno(fn, host[which], *args)
            got = _model_errno(getattr(p, fn), model[which], *args)
            assert got == want, f"{fn}({which}, {args}): model {got}, host {want}"
    finally:
        for k, fd in host.items():
            if k != "bad":
                os.close(fd)
        os.unlink(path)


def test_access_after_truncating_a_mapped_file_to_zero_is_sigbus_in_the_model():
    import pytest

    import specfault as sf

    m = sf.Machine()
    m.create_file("/f", b"y" * 8192)
    p = m.spawn()
    fd = p.open("/f", sf.O_RDWR)
    a = p.mmap(0, 8192, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE, fd)
    p.write(a, b"cow")
    p.ftruncate(fd, 0)
    for addr in (a, a + 4096):
        with pytest.raises(sf.BusError):
            p.read(addr, 1)
    assert p.pagemap(a).present is False
    with pytest.raises(OSError) as exc:
        p.madvise(a, 4096, sf.MADV_REMOVE)
    assert exc.value.errno == 13                            # EACCES: private file mapping
    anon = p.mmap(0, 4096, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    with pytest.raises(OSError) as exc:
        p.madvise(anon, 4096, sf.MADV_REMOVE)
    assert exc.value.errno == 22                            # EINVAL: no file
    m.check()


# ------------------------------------------------------- the random programs
def test_random_programs_truncate_and_punch_mapped_files_then_touch_them():
    import random

    from specfault.oracle.gen import random_program

    ps = [random_program(random.Random(f"5:{i}")) for i in range(300)]

    def frac(pred):
        return sum(1 for p in ps if pred(p)) / len(ps)

    def touched_after(p, op):
        ops = [s["op"] for s in p.steps]
        return op in ops and "touch" in ops[ops.index(op):] and "mmap" in ops[:ops.index(op)]

    assert frac(lambda p: touched_after(p, "ftruncate")) > 0.3
    assert frac(lambda p: touched_after(p, "fallocate")) > 0.15
    assert frac(lambda p: any(s["op"] == "ftruncate" and s["size"] == 0 for s in p.steps)) > 0.05
    assert frac(lambda p: any(s["op"] == "otrunc" for s in p.steps)) > 0.05
    assert frac(lambda p: any(s["op"] == "madvise" and s["advice"] == "MADV_REMOVE"
                              for s in p.steps)) > 0.05


def test_a_small_campaign_with_truncation_agrees_with_the_host(host_runner, model_ready):
    """The default suite's share of the 2,000-program campaign (docs/oracle.md):
    a budget of programs, not seconds."""
    from specfault.oracle.campaign import Oracle, campaign

    oracle = Oracle(host=host_runner)
    verdicts = [(o.run, o.verdict) for o in campaign(30, seed=12, max_steps=12, oracle=oracle)]
    assert len(verdicts) == 30
    bad = [(run, v) for run, v in verdicts if v.status != "agree"]
    assert not bad, bad[:3]
