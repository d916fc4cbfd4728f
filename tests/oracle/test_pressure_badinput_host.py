"""Memory pressure's bad and degenerate inputs on the host kernel, through
the oracle's runner, the model held to the same record: MADV_PAGEOUT with
no swap device and with a full one, a truncation that must drop a
swapped-out private COW copy (and SIGBUS after), and MADV_PAGEOUT of an
unmapped range.  The errno-only cases (EINVAL/EBADF/EOPNOTSUPP of
madvise, ftruncate, fallocate) are in tests/mm/test_pressure_badinput.py.

Host swap is system-wide: each fixture here holds the host-swap lock
(``oracle/hostswap.py``, the one the oracle's --swap mode and the swap host tests
take), and skips, with the reason, when a swap device it did not create
is on (its capacity and counters would not be the test's alone), without
Linux, root, or mkswap/swapon/swapoff.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import RW, fmap, mmap, op, page, prog, touch

import specfault as sf
from specfault.oracle import hostswap
from specfault.oracle.compare import first_divergence
from specfault.oracle.model import run_model

PAGEOUT = "MADV_PAGEOUT"
#: the tiny swap device: its header and TINY_SLOTS slots
TINY_SLOTS = 15


def _host_swap_state(pages: int) -> Iterator[int]:
    """Hold the host-swap lock (oracle/hostswap.py); with ``pages`` > 0
    enable a swap file of that many pages (header included) with
    page-cluster 0 (swap-in reads only the faulting page, as the model
    does); yield ``pages``; undo it all.  Skips, with the reason, where
    that cannot be done or another swap area is on."""
    if pages:
        try:
            with hostswap.HostSwap(pages=pages) as swap:
                yield swap.pages
        except hostswap.SwapUnavailable as exc:
            pytest.skip(str(exc))
        return
    why = hostswap.unavailable()
    if why:
        pytest.skip(why)
    with hostswap.swap_lock():                    # exclusive: nobody turns swap on
        if hostswap.active_swaps():
            pytest.skip(f"swap is on ({', '.join(hostswap.active_swaps())}): the test needs "
                        "the host's swap state to be its own")
        yield 0


@pytest.fixture
def no_swap() -> Iterator[int]:
    yield from _host_swap_state(0)


@pytest.fixture
def tiny_swap() -> Iterator[int]:
    yield from _host_swap_state(TINY_SLOTS + 1)


@pytest.fixture
def some_swap() -> Iterator[int]:
    yield from _host_swap_state(256)                  # 1 MiB


def both(host_runner, p, swap_pages: int = 0):  # type: ignore[no-untyped-def]
    """The host record (asserted error-free) after checking that the model,
    with a swap device of ``swap_pages`` (0: none), agrees step for step."""
    host = host_runner.run(p)
    assert host["error"] is None, host["error"]
    kw = {"swap_pages": swap_pages} if swap_pages else {}
    model = run_model(p, lambda: sf.Machine(nr_frames=65536, **kw))
    assert model["error"] is None, model["error"]
    div = first_divergence(host, model)
    assert div is None, f"model diverges from the host: {div}"
    return [s["result"] for s in host["steps"]], [s["state"] for s in host["steps"]]


def test_pageout_without_swap_keeps_anonymous_pages(no_swap, host_runner, model_ready):
    # shrink_folio_list(): add_to_swap() fails without a swap device, the
    # folio is activated and stays mapped; madvise returns 0
    res, st = both(host_runner, prog(
        mmap(0, 4), *[touch(i, "write", val=0x51 + i) for i in range(4)],
        op("madvise", page=0, npages=4, advice=PAGEOUT), touch(0), touch(3)))
    assert res[5] == {"ret": 0}
    assert all(page(st[5], 0, i).startswith("P") for i in range(4))
    assert res[6] == {"data": "51,00x7"} and res[7] == {"data": "54,00x7"}


def test_pageout_when_swap_is_full_keeps_what_finds_no_slot(tiny_swap, host_runner, model_ready):
    # get_swap_pages() finds no free slot: add_to_swap() fails for the rest,
    # which stay resident; madvise returns 0, again when nothing is free
    n = TINY_SLOTS + 5
    res, st = both(host_runner, prog(
        mmap(0, n), *[touch(i, "write", val=0x50 + i % 16) for i in range(n)],
        op("madvise", page=0, npages=n, advice=PAGEOUT),
        op("madvise", page=0, npages=n, advice=PAGEOUT), touch(0), touch(n - 1)), tiny_swap)
    assert res[n + 1] == res[n + 2] == {"ret": 0}
    swapped = [page(st[n + 1], 0, i).startswith("S") for i in range(n)]
    assert sum(swapped) == TINY_SLOTS and all(page(st[n + 1], 0, i).startswith("P")
                                              for i in range(n) if not swapped[i])
    assert [page(st[n + 2], 0, i) for i in range(n)] == [page(st[n + 1], 0, i) for i in range(n)]
    assert res[n + 3] == {"data": "50,00x7"}
    assert res[n + 4] == {"data": f"{0x50 + (n - 1) % 16:02x},00x7"}


def test_truncate_drops_a_swapped_out_cow_copy_then_sigbus(some_swap, host_runner, model_ready):
    # zap_nonpresent_ptes(): a genuine swap entry in a file mapping is a
    # private COW copy; truncate_pagecache's even_cows zaps it (and
    # free_swap_and_cache frees the slot) — pagemap shows nothing there and
    # an access is SIGBUS; a hole punch (no even_cows) keeps it
    res, st = both(host_runner, prog(
        fmap(0, 4, prot=RW), fmap(8, 4, prot=RW), touch(1, "write", val=0x5a),
        touch(9, "write", val=0x5b), op("madvise", page=1, npages=1, advice=PAGEOUT),
        op("madvise", page=9, npages=1, advice=PAGEOUT),
        op("fallocate", file=0, off=0, len=4 * 4096, mode=["FALLOC_FL_PUNCH_HOLE",
                                                           "FALLOC_FL_KEEP_SIZE"]),
        op("ftruncate", file=0, size=0), touch(1), touch(9)), some_swap)
    assert page(st[5], 0, 1).startswith("S") and page(st[5], 0, 9).startswith("S")
    assert page(st[6], 0, 1).startswith("S") and page(st[6], 0, 9).startswith("S")      # the punch kept them
    assert page(st[7], 0, 1) == "" and page(st[7], 0, 9) == ""        # the truncation did not
    assert all("Swap=" not in line for line in st[7]["0"]["smaps"])
    assert res[8] == {"signal": "SIGBUS", "si_code": "BUS_ADRERR", "at": "1"}
    assert res[9] == {"signal": "SIGBUS", "si_code": "BUS_ADRERR", "at": "9"}


def test_pageout_of_an_unmapped_range_is_enomem_without_swap(no_swap, host_runner, model_ready):
    # madvise_walk_vmas(): a hole in the range is ENOMEM, after the mapped
    # part was advised (here: nothing to swap to, the pages stay)
    res, st = both(host_runner, prog(
        mmap(0, 2), touch(0, "write", val=0x51), op("madvise", page=4, npages=2, advice=PAGEOUT),
        op("madvise", page=0, npages=4, advice=PAGEOUT), touch(0)))
    assert res[2] == {"errno": "ENOMEM"} and res[3] == {"errno": "ENOMEM"}
    assert page(st[3], 0, 0).startswith("P")
    assert res[4] == {"data": "51,00x7"}
