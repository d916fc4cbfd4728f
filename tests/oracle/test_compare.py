"""The comparator catches wrong models: perturbed records stand in for model variants.

Each perturbation mimics what a deliberately broken model would report --
merging disabled, the zero page disabled, COW that always copies, no
fault-around, wrong errno, wrong si_code -- applied to a real host record
(recorded in tests/oracle_corpus, so this runs on any machine).
"""

from __future__ import annotations

import copy
import json
import os
import re

import pytest

from specfault.oracle.compare import (
    KnownDifference,
    first_divergence,
    format_divergence,
    judge,
)
from specfault.oracle.corpus import load

CORPUS = os.path.join(os.path.dirname(__file__), "..", "oracle_corpus")


def entry(name):
    e = load(os.path.join(CORPUS, f"{name}.json"))
    assert e.host is not None and e.host["error"] is None
    return e


def states(rec):
    yield rec["initial"]
    for s in rec["steps"]:
        yield s["state"]


def unmerge(rec):
    """Merge disabled: every VMA that merged would stay as the pieces it was mapped as."""
    bad = copy.deepcopy(rec)
    for st in states(bad):
        for proc in st.values():
            out = []
            for line in proc["maps"]:
                m = re.match(r"(-?\d+)\.\.(-?\d+) (.*)", line)
                s, e = int(m.group(1)), int(m.group(2))
                if e - s >= 8 and s >= 0:      # the 0..8 VMA came from two 4-page mmaps
                    out += [f"{s}..{s + 4} {m.group(3)}", f"{s + 4}..{e} {m.group(3)}"]
                else:
                    out.append(line)
            proc["maps"] = out
    return bad


def no_zero_page(rec):
    """Zero page disabled: read faults on anonymous memory allocate a private zeroed frame."""
    bad = copy.deepcopy(rec)
    n = 1000
    for st in states(bad):
        for proc in st.values():
            for i, p in enumerate(proc["pages"]):
                if p == "P=z":
                    proc["pages"][i] = f"Px=a{n}"
                    n += 1
    return bad


def cow_always_copies(rec):
    """After the child exits, the parent's write copies instead of reusing its frame."""
    bad = copy.deepcopy(rec)
    last = bad["steps"][-1]["state"]["0"]["pages"]
    for i, p in enumerate(last):
        if p.startswith("Px=a"):
            last[i] = "Px=a999"
    return bad


def no_fault_around(rec):
    """Fault-around disabled: a file read fault maps only the faulting page."""
    bad = copy.deepcopy(rec)
    for st in states(bad):
        for proc in st.values():
            present = [i for i, p in enumerate(proc["pages"]) if p.startswith("Pxf=")]
            for i in present[1:]:
                proc["pages"][i] = ""
    return bad


@pytest.mark.parametrize("name,perturb,what", [
    ("agree-merge-adjacent-anon", unmerge, "maps"),
    ("agree-zero-page-then-write", no_zero_page, "pages"),
    ("agree-cow-fork-both-sides", cow_always_copies, "pages"),
    ("agree-fault-around-file-read", no_fault_around, "pages"),
])
def test_perturbed_model_is_caught(name, perturb, what):
    e = entry(name)
    assert first_divergence(e.host, e.host) is None
    bad = perturb(e.host)
    v = judge(e.program, e.host, bad)
    assert v.status == "diverge"
    assert v.divergence is not None and v.divergence.what == what
    text = format_divergence(e.program, v, e.host, bad)
    assert f"step {v.divergence.step}" in text and ">>" in text


def test_result_differences_are_caught_first_at_their_step():
    e = entry("agree-mprotect-across-hole")
    bad = copy.deepcopy(e.host)
    bad["steps"][2]["result"] = {"ret": 0}                  # a model that does not see the hole
    d = first_divergence(e.host, bad)
    assert d is not None and (d.step, d.what) == (2, "result")
    assert d.host == {"errno": "ENOMEM"} and d.model == {"ret": 0}


def test_signal_code_difference_is_caught():
    e = entry("agree-fault-kinds")
    bad = copy.deepcopy(e.host)
    for s in bad["steps"]:
        if s["result"].get("si_code") == "SEGV_ACCERR":
            s["result"]["si_code"] = "SEGV_MAPERR"
            break
    assert judge(e.program, e.host, bad).status == "diverge"


def test_model_crash_is_a_divergence_at_its_step():
    e = entry("agree-zero-page-then-write")
    bad = copy.deepcopy(e.host)
    bad["steps"] = bad["steps"][:2]
    bad["error"] = "step 2: model raised KeyError: 'x'"
    bad["error_step"] = 2
    v = judge(e.program, e.host, bad)
    assert v.status == "diverge" and v.divergence.what == "error" and v.divergence.step == 2


def test_known_difference_is_counted_separately_never_silently():
    e = entry("agree-zero-page-then-write")
    bad = no_zero_page(e.host)
    known = [KnownDifference("no-zero-page", "test: the model has no zero page",
                             lambda prog, d: d.what == "pages" and "P=z" in d.host)]
    v = judge(e.program, e.host, bad, known)
    assert v.status == "known" and v.known == "no-zero-page" and v.divergence is not None
    other = [KnownDifference("unrelated", "matches nothing", lambda prog, d: False)]
    assert judge(e.program, e.host, bad, other).status == "diverge"


def test_host_error_is_not_agreement():
    e = entry("agree-zero-page-then-write")
    broken = dict(e.host, error="host worker failed")
    assert judge(e.program, broken, e.host).status == "host-error"


def test_verdict_json_round_trips():
    e = entry("agree-zero-page-then-write")
    v = judge(e.program, e.host, no_zero_page(e.host))
    obj = json.loads(json.dumps(v.to_json()))
    assert obj["status"] == "diverge" and obj["divergence"]["what"] == "pages"
