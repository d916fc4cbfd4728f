"""The oracle's --swap mode: rules of pageout with swap on the host kernel,
each pinned by a host run (the host-swap lock held, a swap file on,
page-cluster 0, the worker pinned to one CPU) and the model held to the
same record, counters included (a swap device of the same size, written
asynchronously: knob ``swap_writeback="async"``).

The rules (all seen on the reference host, Linux 6.18, a swap file on ext4):

* the swap file's writes are asynchronous: a folio just written stays in
  the swap cache, so a refault soon after MADV_PAGEOUT is a *minor* fault
  with no swap-in (pswpin 0) — the slot stays allocated until a write
  fault (or swap half full) frees it;
* a zero-filled page is not written (the zeromap: no pswpout) and leaves
  the swap cache at once, so its refault is a major fault that reads
  nothing (pswpin 0, majflt 1);
* a page read back from the swap cache and paged out again while still
  clean is not written again (pswpout 0), and is freed: its refault reads
  the slot (pswpin 1, majflt 1);
* shmem (a tmpfs file): pageout moves the pages to swap — the mapping's
  smaps shows them as Swap even though its PTEs are none; a refault maps
  only the faulting page (the others are not in the page cache for
  fault-around); hole punching and truncation free the swap entries;
  read() swaps a page in without a major fault;
* a fork copies a swap PTE (both processes hold the slot: one label), and
  the child's read maps the swap-cache folio; paged out again from the
  child (mapped once) it goes back to the same slot;
* truncation zaps swapped-out private COWed copies beyond EOF too;
* fallocate (allocating, KEEP_SIZE) over a swapped shmem page swaps it
  back into the page cache (shmem_get_folio with SGP_FALLOC).

Skipped, with the reason, without Linux, root, the swap tools or the
host oracle.
"""

from __future__ import annotations

from helpers import fmap, mmap, op, page, prog, touch

from specfault.oracle.compare import judge
from specfault.oracle.model import run_model

PO = "MADV_PAGEOUT"
RW = ["PROT_READ", "PROT_WRITE"]


def run(swap_runner, p):
    """Host results, counters and states of ``p``; the model must agree."""
    runner, pages = swap_runner
    rec = runner.run(p)
    assert rec["error"] is None, rec["error"]
    v = judge(p, rec, run_model(p, swap_pages=pages))
    assert v.status == "agree", v.divergence
    steps = rec["steps"]
    return ([s["result"] for s in steps], [s["counters"] for s in steps],
            [s["state"] for s in steps])


def c(pswpin=0, pswpout=0, majflt=0):
    return {"pswpin": pswpin, "pswpout": pswpout, "majflt": majflt}


def test_a_refault_after_pageout_hits_the_swap_cache(swap_runner):
    res, cnt, st = run(swap_runner, prog(
        mmap(0, 4), touch(0, "write", val=0x51), touch(1, "write", val=0x52),
        op("madvise", page=0, npages=4, advice=PO), touch(0), touch(1, "write", val=0x53)))
    assert cnt[3] == c(pswpout=2)
    assert [page(st[3], 0, i) for i in range(2)] == ["S=s0", "S=s1"]
    assert res[4] == {"data": "51,00x7"} and cnt[4] == c()         # minor: the folio is still cached
    assert page(st[4], 0, 0).startswith("Px=") and page(st[4], 0, 1) == "S=s1"
    assert cnt[5] == c() and st[5]["0"]["smaps"][1] == "0..4 Rss=8 Anonymous=8"


def test_a_zero_filled_page_is_not_written_and_its_refault_is_major(swap_runner):
    populate = ["MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_FIXED", "MAP_POPULATE"]
    res, cnt, st = run(swap_runner, prog(
        mmap(0, 2, flags=populate), op("madvise", page=0, npages=2, advice=PO), touch(0)))
    assert cnt[1] == c() and st[1]["0"]["smaps"][1] == "0..2 Rss=0 Anonymous=0 Swap=8"
    assert res[2] == {"data": "00x8"} and cnt[2] == c(majflt=1)    # nothing read: the zeromap


def test_a_clean_page_paged_out_again_is_not_rewritten_and_is_read_back(swap_runner):
    res, cnt, st = run(swap_runner, prog(
        mmap(0, 1), touch(0, "write", val=0x51), op("madvise", page=0, npages=1, advice=PO),
        touch(0), op("madvise", page=0, npages=1, advice=PO), touch(0)))
    assert cnt[2] == c(pswpout=1) and cnt[3] == c()
    assert cnt[4] == c() and page(st[4], 0, 0) == "S=s1"           # the same slot, relabelled
    assert res[5] == {"data": "51,00x7"} and cnt[5] == c(pswpin=1, majflt=1)


def test_shmem_pages_go_to_swap_and_truncation_frees_them(swap_runner):
    res, cnt, st = run(swap_runner, prog(
        fmap(0, 4, shared=True, prot=RW), touch(0), op("madvise", page=0, npages=4, advice=PO),
        touch(1),
        op("fallocate", file=0, off=0, len=4096, mode=["FALLOC_FL_PUNCH_HOLE", "FALLOC_FL_KEEP_SIZE"]),
        touch(0), op("ftruncate", file=0, size=3 * 4096), touch(3), op("pread", file=0, off=8192, len=8)))
    assert all(page(st[1], 0, i).startswith("Pxf=") for i in range(4))      # fault-around
    assert cnt[2] == c(pswpout=4) and [page(st[2], 0, i) for i in range(4)] == [""] * 4
    assert st[2]["0"]["smaps"][1] == "0..4 Rss=0 Anonymous=0 Swap=16"    # PTEs none, yet Swap
    assert res[3] == {"data": "51x8"} and cnt[3] == c()
    assert [bool(page(st[3], 0, i)) for i in range(4)] == [False, True, False, False]
    assert st[4]["0"]["smaps"][1].endswith("Swap=8")                      # the punched entry freed
    assert res[5] == {"data": "00x8"}
    assert st[6]["0"]["smaps"][1].endswith("Swap=4")                      # truncated: freed
    assert res[7]["signal"] == "SIGBUS"
    assert res[8] == {"data": "52x8"} and cnt[8] == c()                   # read() swaps it in
    assert st[8]["0"]["smaps"][1] == "0..4 Rss=8 Anonymous=0"


def test_fork_shares_the_slot_and_the_child_pages_out_to_it_again(swap_runner):
    res, cnt, st = run(swap_runner, prog(
        mmap(0, 2), touch(0, "write", val=0x51), op("madvise", page=0, npages=2, advice=PO),
        op("fork"), touch(0, proc=1), op("madvise", page=0, npages=1, advice=PO, proc=1)))
    assert page(st[3], 0, 0) == page(st[3], 1, 0) == "S=s0"
    assert res[4] == {"data": "51,00x7"} and page(st[4], 1, 0).startswith("Px=")
    assert cnt[5] == c() and page(st[5], 1, 0) == "S=s0"                 # clean: no write


def test_truncation_zaps_a_swapped_out_cow_copy(swap_runner):
    res, cnt, st = run(swap_runner, prog(
        fmap(0, 2, prot=RW), touch(0, "write", val=0x5A), touch(1),
        op("madvise", page=0, npages=2, advice=PO), op("ftruncate", file=0, size=0), touch(0)))
    assert cnt[3] == c(pswpout=2) and page(st[3], 0, 0) == "S=s0" and page(st[3], 0, 1) == ""
    assert st[3]["0"]["smaps"][1].endswith("Swap=8")   # the COW copy's swap PTE + the file's page
    assert page(st[4], 0, 0) == "" and st[4]["0"]["smaps"][1] == "0..2 Rss=0 Anonymous=0"
    assert res[5]["signal"] == "SIGBUS"


def test_fallocate_brings_a_swapped_shmem_page_back(swap_runner):
    res, cnt, st = run(swap_runner, prog(
        fmap(0, 2, shared=True), touch(1), op("madvise", page=0, npages=2, advice=PO),
        op("fallocate", file=0, off=4096 + 100, len=1, mode=["FALLOC_FL_KEEP_SIZE"]), touch(1)))
    assert st[2]["0"]["smaps"][1] == "0..2 Rss=0 Anonymous=0 Swap=8"
    assert cnt[3] == c() and st[3]["0"]["smaps"][1] == "0..2 Rss=0 Anonymous=0 Swap=4"   # SGP_FALLOC
    assert res[4] == {"data": "51x8"} and page(st[4], 0, 0) == ""        # in the page cache, alone
