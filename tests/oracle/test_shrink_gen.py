"""Generators produce valid, hard programs; the shrinker finds minimal ones."""

from __future__ import annotations

import random

from helpers import mmap, op, prog, touch
from hypothesis import given, settings

from specfault.oracle.gen import programs, random_program
from specfault.oracle.shrink import shrink


def test_random_programs_are_valid_and_reproducible():
    for i in range(200):
        p = random_program(random.Random(f"7:{i}"))
        p.validate()
        assert 1 <= len(p.steps) <= 30
    assert random_program(random.Random("1:2")) == random_program(random.Random("1:2"))


def test_random_programs_cover_the_hard_cases():
    ps = [random_program(random.Random(f"3:{i}")) for i in range(300)]

    def frac(pred):
        return sum(1 for p in ps if pred(p)) / len(ps)

    def adjacent(p):
        ends = set()
        for s in p.steps:
            if s["op"] == "mmap" and s["page"] is not None:
                if s["page"] in ends:
                    return True
                ends.add(s["page"] + s["npages"])
        return False

    def cow_both_sides(p):
        forked = any(s["op"] == "fork" for s in p.steps)
        writers = {s["proc"] for s in p.steps if s["op"] == "touch" and s["kind"] == "write"}
        return forked and len(writers) >= 2

    def read_then_write(p):
        return any(a["op"] == b["op"] == "touch" and a["kind"] == "read" and b["kind"] == "write"
                   and a["page"] == b["page"] for a, b in zip(p.steps, p.steps[1:], strict=False))

    assert frac(adjacent) > 0.2
    assert frac(cow_both_sides) > 0.1
    assert frac(read_then_write) > 0.1
    assert frac(lambda p: any(s["op"] == "mremap" and s.get("new_page") is not None for s in p.steps)) > 0.2
    assert frac(lambda p: any(s["op"] == "mmap" and "file" in s for s in p.steps)) > 0.3
    assert frac(lambda p: any(s["op"] == "mprotect" and s["npages"] >= 4 for s in p.steps)) > 0.1


@settings(max_examples=50, deadline=None)
@given(programs(max_steps=12))
def test_hypothesis_programs_are_valid(p):
    p.validate()
    assert len(p.steps) <= 12


def test_shrink_removes_irrelevant_steps_and_whole_children():
    p = prog(mmap(0, 4), touch(0), op("fork"), touch(1, proc=1), op("fork", proc=1), touch(2, proc=2),
             mmap(8, 2), op("fork"), touch(3, "write", proc=3, val=0x51), touch(3))

    def fails(q):  # "the bug": some process other than 0 writes page 3
        return any(s["op"] == "touch" and s["kind"] == "write" and s["page"] == 3 and s["proc"] != 0
                   for s in q.steps)

    small = shrink(p, fails)
    assert [s["op"] for s in small.steps] == ["fork", "touch"]
    assert small.steps[1]["proc"] == 1          # renumbered: it is now the first child
    small.validate()


def test_shrink_simplifies_arguments():
    p = prog(mmap(0, 12), touch(5, "exec"))
    small = shrink(p, lambda q: any(s["op"] == "touch" for s in q.steps))
    assert small.steps == [touch(5, "read")]
