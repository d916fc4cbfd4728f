"""The host runner sees what the kernel does (run against the live kernel; skipped elsewhere).

These pin the facts the oracle depends on: if the host side could not see
the zero page, COW, merges or fault-around, the oracle could not catch a
model that gets them wrong.
"""

from __future__ import annotations

from helpers import RW, fmap, mmap, op, page, prog, touch


def run(host_runner, p):
    rec = host_runner.run(p)
    assert rec["error"] is None, rec["error"]
    return rec


def test_read_maps_zero_page_then_write_allocates(host_runner):
    rec = run(host_runner, prog(mmap(0, 4), touch(1), touch(1, "write", val=0x51), touch(1)))
    s = rec["steps"]
    assert s[1]["result"] == {"data": "00x8"}
    assert page(s[1]["state"], 0, 1) == "P=z"                 # zero page: present, not exclusive, no file bit
    assert s[1]["state"]["0"]["smaps"][1] == "0..4 Rss=0 Anonymous=0"   # the zero page is not in Rss
    assert page(s[2]["state"], 0, 1).startswith("Px=a")
    assert s[3]["result"] == {"data": "51,00x7"}
    assert "0..4 Rss=4 Anonymous=4" in s[2]["state"]["0"]["smaps"]


def test_cow_after_fork_copies_in_writer_and_parent_reuses_after_child_exit(host_runner):
    rec = run(host_runner, prog(mmap(0, 2), touch(0, "write", val=0x51), op("fork"),
                                touch(0, "write", proc=1, val=0x52), op("exit", proc=1),
                                touch(0, "write", val=0x53)))
    s = rec["steps"]
    before = page(s[1]["state"], 0, 0)
    assert page(s[2]["state"], 0, 0) == page(s[2]["state"], 1, 0) == before.replace("x", "")  # shared, not exclusive
    assert page(s[3]["state"], 0, 0) == before                 # parent keeps the frame, exclusive again
    assert page(s[3]["state"], 1, 0) not in (before, "")       # child copied
    assert page(s[5]["state"], 0, 0) == before                 # reused, not copied


def test_adjacent_anonymous_mappings_merge_and_mprotect_splits(host_runner):
    rec = run(host_runner, prog(mmap(0, 4), mmap(4, 4), mmap(8, 2, ["PROT_READ"]),
                                op("mprotect", page=2, npages=1, prot=["PROT_READ"])))
    maps = [st["state"]["0"]["maps"] for st in rec["steps"]]
    assert "0..8 rw-p 0 anon" in maps[1]
    assert "0..8 rw-p 0 anon" in maps[2] and "8..10 r--p 0 anon" in maps[2]
    assert ["0..2 rw-p 0 anon", "2..3 r--p 0 anon", "3..8 rw-p 0 anon"] == [
        m for m in maps[3] if m.startswith(("0..", "2..", "3.."))]


def test_mprotect_across_a_hole_fails_after_changing_the_first_part(host_runner):
    rec = run(host_runner, prog(mmap(0, 2), mmap(3, 2), op("mprotect", page=0, npages=5, prot=["PROT_READ"])))
    last = rec["steps"][2]
    assert last["result"] == {"errno": "ENOMEM"}
    assert "0..2 r--p 0 anon" in last["state"]["0"]["maps"]
    assert "3..5 rw-p 0 anon" in last["state"]["0"]["maps"]


def test_file_read_fault_maps_a_fault_around_window(host_runner):
    rec = run(host_runner, prog(fmap(0, 8, offset=0), touch(5)), )
    pages = [page(rec["steps"][1]["state"], 0, i) for i in range(8)]
    assert all(p.startswith("Pxf=") for p in pages), pages     # the whole 16-page window, clipped to the VMA
    assert rec["steps"][1]["result"] == {"data": "55x8"}       # file0 page 5 holds byte 0x55


def test_touch_beyond_end_of_file_is_sigbus_and_fault_kinds_are_told_apart(host_runner):
    rec = run(host_runner, prog(fmap(0, 4, offset=6), touch(1), touch(3),
                                mmap(10, 1, ["PROT_READ"]), touch(10, "write"), touch(20),
                                touch(10, "exec")))
    res = [s["result"] for s in rec["steps"]]
    assert res[1] == {"data": "57x8"}
    assert res[2] == {"signal": "SIGBUS", "si_code": "BUS_ADRERR", "at": "3"}
    assert res[4] == {"signal": "SIGSEGV", "si_code": "SEGV_ACCERR", "at": "10"}
    assert res[5] == {"signal": "SIGSEGV", "si_code": "SEGV_MAPERR", "at": "20"}
    assert res[6] == {"signal": "SIGSEGV", "si_code": "SEGV_ACCERR", "at": "10"}


def test_exec_touch_of_executable_page_succeeds_without_writing(host_runner):
    rec = run(host_runner, prog(mmap(0, 1, ["PROT_READ", "PROT_EXEC"]), touch(0, "exec"), touch(0)))
    assert rec["steps"][1]["result"] == {"ret": 0}
    assert page(rec["steps"][1]["state"], 0, 0) == "P=z"       # a fetch is a read fault
    assert rec["steps"][2]["result"] == {"data": "00x8"}


def test_shared_file_write_is_seen_by_pread_and_other_mapping(host_runner):
    rec = run(host_runner, prog(fmap(0, 2, prot=RW, shared=True), touch(1, "write", off=8, val=0x5f),
                                op("pread", file=0, off=4096, len=16), fmap(10, 2, shared=True), touch(11),
                                op("pwrite", file=0, off=4096 + 1, len=1, val=0x50), touch(1)))
    res = [s["result"] for s in rec["steps"]]
    assert res[2] == {"data": "51x8,5f,51x7"}
    assert page(rec["steps"][4]["state"], 0, 1) == page(rec["steps"][4]["state"], 0, 11)
    assert page(rec["steps"][4]["state"], 0, 1).startswith("Pf=")   # same page cache frame, mapped twice
    assert res[6] == {"data": "51,50,51x6"}


def test_hint_that_does_not_fit_lands_outside_and_noreplace_collides(host_runner):
    rec = run(host_runner, prog(mmap(0, 4), mmap(2, 4, flags=["MAP_PRIVATE", "MAP_ANONYMOUS"]),
                                mmap(6, 2, flags=["MAP_PRIVATE", "MAP_ANONYMOUS"]),
                                mmap(1, 1, flags=["MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_FIXED_NOREPLACE"])))
    res = [s["result"] for s in rec["steps"]]
    assert res[1] == {"ret": "outside"}
    assert res[2] == {"ret": 6}
    assert res[3] == {"errno": "EEXIST"}


def test_mremap_fixed_moves_frames_over_an_existing_mapping(host_runner):
    rec = run(host_runner, prog(mmap(0, 2), touch(0, "write"), mmap(10, 4), touch(10, "write"),
                                op("mremap", page=0, npages=2, new_npages=2,
                                   flags=["MREMAP_MAYMOVE", "MREMAP_FIXED"], new_page=10)))
    s = rec["steps"]
    moved = page(s[1]["state"], 0, 0)
    assert s[4]["result"] == {"ret": 10}
    assert page(s[4]["state"], 0, 10) == moved                 # the same frame, moved
    assert page(s[4]["state"], 0, 0) == ""
    assert "10..12 rw-p 0 anon" in s[4]["state"]["0"]["maps"]
    assert "12..14 rw-p 0 anon" in s[4]["state"]["0"]["maps"]  # not merged: different anon_vma/pgoff


def test_dontfork_vma_is_missing_in_the_child(host_runner):
    rec = run(host_runner, prog(mmap(0, 4), op("madvise", page=1, npages=1, advice="MADV_DONTFORK"),
                                op("fork")))
    st = rec["steps"][2]["state"]
    assert "1..2 rw-p 0 anon" in st["0"]["maps"]
    assert [m for m in st["1"]["maps"] if m.startswith(("0..", "2.."))] == ["0..1 rw-p 0 anon", "2..4 rw-p 0 anon"]
