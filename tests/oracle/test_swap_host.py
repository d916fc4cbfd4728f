"""MADV_PAGEOUT with swap, on the host kernel: the rules the model's swap
(reclaim, swap entries, do_swap_page) must follow, each pinned by a host
run through the oracle's runner (a swap file enabled for this module, the
workers pinned to one CPU: host_worker.pin_to_one_cpu).  Skipped, with the
reason, without Linux, root or the swap tools.

Seen by hand first (issue 12): pagemap shows swapped, a read brings the
page back; pages shared after fork and the zero page are skipped; a
private mapping of a tmpfs file is unmapped and the re-read maps only the
faulting page.
"""

from __future__ import annotations

from helpers import fmap, mmap, op, page, prog, touch

PAGEOUT = "MADV_PAGEOUT"


def run(swap_runner, p):
    rec = swap_runner[0].run(p)
    assert rec["error"] is None, rec["error"]
    return [s["result"] for s in rec["steps"]], [s["state"] for s in rec["steps"]]


def test_pageout_swaps_anonymous_pages_and_a_read_brings_them_back(swap_runner):
    res, st = run(swap_runner, prog(
        mmap(0, 4), touch(0, "write", val=0x51), touch(1, "write", val=0x52),
        op("madvise", page=0, npages=4, advice=PAGEOUT), touch(0), touch(1, "write", val=0x53), touch(1)))
    assert [page(st[3], 0, i) for i in range(4)] == ["S=s0", "S=s1", "", ""]
    assert st[3]["0"]["smaps"][1] == "0..4 Rss=0 Anonymous=0 Swap=8"
    assert res[4] == {"data": "51,00x7"}
    assert page(st[4], 0, 0).startswith("Px=") and page(st[4], 0, 1) == "S=s1"   # only the faulting page
    assert res[6] == {"data": "53,00x7"}
    assert st[6]["0"]["smaps"][1] == "0..4 Rss=8 Anonymous=8"                 # swap slots freed


def test_pageout_skips_the_zero_page_and_pages_shared_after_fork(swap_runner):
    res, st = run(swap_runner, prog(
        mmap(0, 2), touch(0, "write", val=0x51), touch(1), op("fork"),
        op("madvise", page=0, npages=2, advice=PAGEOUT),
        op("exit", proc=1), op("madvise", page=0, npages=2, advice=PAGEOUT)))
    assert res[4] == {"ret": 0}
    assert page(st[4], 0, 0).startswith("P=") and page(st[4], 0, 1) == "P=z"   # mapcount 2; zero page
    assert page(st[6], 0, 0) == "S=s0" and page(st[6], 0, 1) == "P=z"         # the child gone: swapped


def test_pageout_of_a_private_tmpfs_mapping_unmaps_and_the_reread_maps_one_page(swap_runner):
    res, st = run(swap_runner, prog(
        fmap(0, 4), touch(0), op("madvise", page=0, npages=4, advice=PAGEOUT), touch(1), touch(2)))
    assert all(page(st[1], 0, i).startswith("P") for i in range(4))           # fault-around
    assert [page(st[2], 0, i) for i in range(4)] == ["", "", "", ""]          # shmem pages swapped
    assert [bool(page(st[3], 0, i)) for i in range(4)] == [False, True, False, False]
    assert res[3] == {"data": "51x8"} and res[4] == {"data": "52x8"}


def test_pageout_of_an_unmapped_range_is_enomem(swap_runner):
    res, _ = run(swap_runner, prog(mmap(0, 2), op("madvise", page=4, npages=2, advice=PAGEOUT),
                                   op("madvise", page=0, npages=4, advice=PAGEOUT)))
    assert res[1] == {"errno": "ENOMEM"}
    assert res[2] == {"errno": "ENOMEM"}      # the mapped part is paged out, then ENOMEM


def test_pageout_is_deterministic_when_pinned(swap_runner):
    p = prog(mmap(0, 8), *[touch(i, "write", val=0x50 + i) for i in range(8)],
             op("madvise", page=0, npages=8, advice=PAGEOUT))
    seen = {tuple(page(run(swap_runner, p)[1][-1], 0, i) for i in range(8)) for _ in range(3)}
    assert seen == {tuple(f"S=s{i}" for i in range(8))}
