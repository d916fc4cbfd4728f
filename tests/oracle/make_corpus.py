"""(Re)record the hand-written corpus entries: ``python tests/oracle/make_corpus.py``.

Runs each program below on the live host kernel and writes
tests/oracle_corpus/<name>.json with the host record, so the test suite can
replay them on machines without a usable host.  Entries found by the
oracle's random search are written by ``specfault oracle`` itself.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from helpers import RW, fmap, mmap, op, prog, touch  # noqa: E402

from specfault.oracle import corpus  # noqa: E402
from specfault.oracle.host import HostRunner  # noqa: E402

CORPUS = os.path.join(os.path.dirname(__file__), "..", "oracle_corpus")

SEEDS = {
    "agree-zero-page-then-write": (
        "read fault maps the zero page; a write replaces it with a private frame",
        prog(mmap(0, 4), touch(1), touch(1, "write", val=0x51), touch(1))),
    "agree-cow-fork-both-sides": (
        "fork shares anon frames; the child's write copies; the parent reuses its frame after exit",
        prog(mmap(0, 2), touch(0, "write", val=0x51), op("fork"), touch(0, "write", proc=1, val=0x52),
             touch(0, proc=0), op("exit", proc=1), touch(0, "write", val=0x53))),
    "agree-merge-adjacent-anon": (
        "adjacent private anon mappings with equal flags merge; mprotect splits and re-merges",
        prog(mmap(0, 4), mmap(4, 4), op("mprotect", page=2, npages=2, prot=["PROT_READ"]),
             op("mprotect", page=2, npages=2, prot=RW))),
    "agree-mprotect-across-hole": (
        "mprotect over a hole fails with ENOMEM after changing the part before the hole",
        prog(mmap(0, 2), mmap(3, 2), op("mprotect", page=0, npages=5, prot=["PROT_READ"]))),
    "agree-fault-around-file-read": (
        "a read fault on a private file mapping maps the fault-around window of cached pages",
        prog(fmap(0, 8, offset=0), touch(5), touch(3, "write", val=0x5a))),
    "agree-fault-kinds": (
        "SIGBUS beyond EOF, SEGV_ACCERR for protection, SEGV_MAPERR for holes, exec of a present NX page",
        prog(fmap(0, 4, offset=6), touch(1), touch(3), mmap(10, 1, ["PROT_READ"]), touch(10, "write"),
             touch(20), touch(10), touch(10, "exec"), touch(1, "exec"))),
    "agree-shared-file-write-pread": (
        "a store through MAP_SHARED is seen by pread and by another shared mapping of the page",
        prog(fmap(0, 2, prot=RW, shared=True), touch(1, "write", off=8, val=0x5f),
             op("pread", file=0, off=4096, len=16), fmap(10, 2, shared=True), touch(11),
             op("pwrite", file=0, off=4097, len=1, val=0x50), touch(1))),
    "agree-mremap-fixed-over-mapping": (
        "MREMAP_FIXED moves frames onto an existing mapping, unmapping what was there",
        prog(mmap(0, 2), touch(0, "write"), mmap(10, 4), touch(10, "write"),
             op("mremap", page=0, npages=2, new_npages=2, flags=["MREMAP_MAYMOVE", "MREMAP_FIXED"],
                new_page=10))),
    "agree-dontfork": (
        "MADV_DONTFORK keeps a VMA out of the child",
        prog(mmap(0, 4), op("madvise", page=1, npages=1, advice="MADV_DONTFORK"), op("fork"),
             touch(1, proc=1))),
    "agree-hint-noreplace": (
        "a hint that does not fit goes elsewhere (outside); MAP_FIXED_NOREPLACE collides with EEXIST",
        prog(mmap(0, 4), mmap(2, 4, flags=["MAP_PRIVATE", "MAP_ANONYMOUS"]),
             mmap(6, 2, flags=["MAP_PRIVATE", "MAP_ANONYMOUS"]),
             mmap(1, 1, flags=["MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_FIXED_NOREPLACE"]))),
}

MMF = ["MREMAP_MAYMOVE", "MREMAP_FIXED"]

#: Divergences the oracle found in the model (expect "diverge" until fixed; then flip to "agree").
DIVERGENCES = {
    "diverge-exec-nonexec-maps-zero-page": (
        "x86: an instruction fetch from a not-present page of a readable non-exec VMA is handled as a "
        "read fault (access_error ignores PF_INSTR), so the zero page is mapped before SEGV_ACCERR",
        prog(mmap(0, 2), touch(1, "exec"))),
    "diverge-exec-nonexec-fault-around": (
        "the same on a private file mapping: the read fault maps the fault-around window, then SEGV_ACCERR",
        prog(fmap(0, 4), touch(1, "exec"))),
    "diverge-exec-nonexec-beyond-eof-sigbus": (
        "the same beyond EOF: the read fault raises SIGBUS (BUS_ADRERR), not SIGSEGV",
        prog(fmap(0, 2, offset=8, prot=RW, shared=True), touch(0, "exec"))),
    "diverge-noreplace-shared-file": (
        "MAP_FIXED_NOREPLACE must fail with EEXIST over an existing mapping for a MAP_SHARED file mapping too",
        prog(mmap(0, 1), mmap(0, 1, RW, ["MAP_SHARED", "MAP_FIXED_NOREPLACE"], file=0, offset=1))),
    "diverge-mremap-overlap-einval-first": (
        "mremap MAYMOVE|FIXED with overlapping old and new ranges is EINVAL before the source is looked up",
        prog(op("mremap", page=0, npages=3, new_npages=1, flags=MMF, new_page=2))),
    "diverge-mremap-fixed-efault-keeps-target": (
        "mremap MREMAP_FIXED with an invalid source (EFAULT) must leave the target range mapped: Linux "
        "validates the source before unmapping the target; the model unmaps the target first",
        prog(mmap(40, 4), mmap(32, 1), op("mremap", page=43, npages=2, new_npages=4, flags=MMF, new_page=29))),
    "diverge-mremap-move-multiple-vmas": (
        "Linux 6.17+: mremap MAYMOVE|FIXED with old_len == new_len may move several VMAs at once",
        prog(mmap(27, 1), op("mprotect", page=28, npages=1, prot=["PROT_NONE"]), mmap(28, 1, ["PROT_NONE"]),
             op("mremap", page=27, npages=2, new_npages=2, flags=MMF, new_page=55))),
    "diverge-mremap-move-across-gap": (
        "Linux 6.17+: ... and the moved range may contain gaps (the hole stays a hole)",
        prog(mmap(60, 1), op("mremap", page=60, npages=2, new_npages=2, flags=MMF, new_page=57))),
    "diverge-mremap-zero-old-len-private": (
        "mremap with old_len 0 (duplicate) of a private mapping is EINVAL and must leave no new mapping",
        prog(mmap(58, 1, ["PROT_NONE"], ["MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_FIXED"]),
             op("mremap", page=58, npages=0, new_npages=1, flags=MMF, new_page=45))),
    "diverge-mremap-dontunmap-across-gap": (
        "Linux 6.17+: the multi-VMA/gap move also applies to MREMAP_DONTUNMAP|FIXED",
        prog(mmap(30, 2, ["PROT_READ", "PROT_EXEC"]),
             op("mremap", page=31, npages=3, new_npages=3, flags=MMF + ["MREMAP_DONTUNMAP"], new_page=2))),
    "diverge-mremap-zero-old-len-shared-duplicates": (
        "mremap with old_len 0 of a shared mapping duplicates it (MAYMOVE|FIXED to the target)",
        prog(mmap(62, 1, ["PROT_NONE"], ["MAP_SHARED", "MAP_ANONYMOUS", "MAP_FIXED"]),
             op("mremap", page=62, npages=0, new_npages=1, flags=MMF, new_page=40))),
}


def main() -> int:
    runner = HostRunner()
    try:
        for name, (note, p) in SEEDS.items():
            rec = runner.run(p)
            if rec["error"]:
                print(f"{name}: host error {rec['error']}", file=sys.stderr)
                return 1
            path = corpus.save(corpus.Entry(name, p, rec, note, "agree", corpus.kernel_release()), CORPUS)
            print(path)
        for name, (note, p) in DIVERGENCES.items():
            rec = runner.run(p)
            if rec["error"]:
                print(f"{name}: host error {rec['error']}", file=sys.stderr)
                return 1
            expect = "diverge"
            old = os.path.join(CORPUS, f"{name}.json")
            if os.path.exists(old):
                expect = corpus.load(old).expect      # keep a flip to "agree" once fixed
            path = corpus.save(corpus.Entry(name, p, rec, note, expect, corpus.kernel_release()), CORPUS)
            print(path)
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
