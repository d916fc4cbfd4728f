"""Page contents: only the bytes written so far are held, the rest of the
page reads as zeroes — through the API, across a COW copy, and at the
page's last byte."""

from __future__ import annotations

import pytest

import specfault as sf
from specfault.mm.page import Page
from specfault.runtime import ModelBug

P = 4096


def test_a_small_write_holds_only_its_bytes_and_reads_back_zero_filled() -> None:
    page = Page(0x2000)
    page.write(0, b"x")
    assert page.data is not None and len(page.data) == 1
    assert page.read(0, 8) == b"x" + bytes(7)
    assert page.read(100, 4) == bytes(4)           # wholly past what was written
    page.write(P - 2, b"yz")                        # the last two bytes
    assert len(page.data) == P
    assert page.read(0, P) == b"x" + bytes(P - 3) + b"yz"
    with pytest.raises(ModelBug):
        page.write(P - 1, b"ab")                    # across the end of the page


def test_contents_through_the_api_and_a_cow_copy() -> None:
    m = sf.Machine(nr_frames=64)
    p = m.spawn()
    a = p.mmap(0, 2 * P, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    p.write(a + 10, b"hi")
    assert p.read(a, 16) == bytes(10) + b"hi" + bytes(4)
    c = p.fork()
    c.write(a + 3000, b"child")                     # wp_page_copy copies the short buffer
    assert c.read(a, 16) == p.read(a, 16)
    assert c.read(a + 2998, 9) == bytes(2) + b"child" + bytes(2)
    assert p.read(a + 2998, 9) == bytes(9)
    assert p.read(a + P - 4, 8) == bytes(8)          # across two pages, both zero there
