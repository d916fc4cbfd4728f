"""Replaying traces in the model: the corpus agrees with the host under every
protocol; a trace whose host results differ from the model's is caught at
the event where they differ; what the model does not model is named."""

from __future__ import annotations

import copy
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specfault.trace import format as fmt
from specfault.trace.replay import Replayer, iter_lines, replay

CORPUS = sorted(glob.glob(str(Path(__file__).resolve().parents[1] / "trace_corpus" / "*.trace.gz")))
PROTOCOLS = ("classic", "speculative", "pervma", "dufour")
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _load(name: str) -> fmt.Trace:
    path = next(p for p in CORPUS if os.path.basename(p).startswith(name))
    return fmt.load(path)


def test_corpus_is_there() -> None:
    names = {os.path.basename(p) for p in CORPUS}
    assert {"python3-c-pass.trace.gz", "java-version.trace.gz", "mtmap.trace.gz",
            "sh-pipe.trace.gz"} <= names
    assert all(os.path.getsize(p) < 1 << 20 for p in CORPUS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("path", CORPUS, ids=[os.path.basename(p) for p in CORPUS])
def test_corpus_agrees(path: str, protocol: str) -> None:
    tr = fmt.load(path)
    res = replay(tr, protocol, path)
    report = "\n".join(iter_lines(res, tr.files))
    assert res.agreed, report
    assert res.events == len(tr.events)
    agree, total = res.totals()
    assert agree == total > 0
    # everything the trace holds was compared
    faults = sum(1 for e in tr.events if e["k"] == "fault")
    kfaults = sum(len(e.get("kfaults", ())) for e in tr.events if e["k"] == "exec")
    assert res.faults.total + res.kfaults.total == faults + kfaults
    assert res.layouts.total == len(tr.finals) >= 1


def test_corpus_covers_what_it_should() -> None:
    """Threads, forks, execs, a stack grown by a fault, a SIGSEGV, shared
    file mappings, MAP_GROWSDOWN: each appears in some corpus trace."""
    seen: set[str] = set()
    for path in CORPUS:
        tr = fmt.load(path)
        for ev in tr.events:
            if ev["k"] == "clone":
                seen.add("thread" if ev["flags"] & 0x100 else "fork")
            elif ev["k"] == "exec" and ev["t"] > 0:
                seen.add("exec in a child")
            elif ev["k"] == "fault" and ev.get("sig"):
                seen.add("signal")
            elif ev["k"] == "fault" and ev.get("maps"):
                seen.add("stack growth")
            elif ev["k"] == "sys" and ev["name"] == "mmap" and ev["args"][3] & 0x100:
                seen.add("MAP_GROWSDOWN")
            elif ev["k"] == "sys" and ev["name"] == "mmap" and ev["args"][3] & 3 == 1 \
                    and not ev["args"][3] & 0x20:
                seen.add("shared file")
    assert {"thread", "fork", "exec in a child", "signal", "stack growth", "MAP_GROWSDOWN",
            "shared file"} <= seen


def _first(tr: fmt.Trace, pred) -> int:  # type: ignore[no-untyped-def]
    return next(i for i, e in enumerate(tr.events) if pred(e))


def test_a_different_mmap_result_is_the_first_divergence() -> None:
    tr = copy.deepcopy(_load("python3"))
    i = _first(tr, lambda e: e["k"] == "sys" and e["name"] == "mmap" and e["ret"] > 0)
    tr.events[i]["ret"] += 0x1000
    res = replay(tr)
    assert not res.agreed
    d = res.divergences[0]
    assert (d.index, d.what) == (i, "result")
    assert d.host == hex(tr.events[i]["ret"]) and d.model == hex(tr.events[i]["ret"] - 0x1000)
    text = "\n".join(iter_lines(res, tr.files))
    assert f"first divergence: event {i}" in text and "mmap(" in text


def test_a_signal_the_model_does_not_raise_diverges() -> None:
    tr = copy.deepcopy(_load("python3"))
    i = _first(tr, lambda e: e["k"] == "fault" and e["user"] and not e.get("sig"))
    tr.events[i]["sig"] = [11, 2]
    res = replay(tr)
    d = res.divergences[0]
    assert (d.index, d.what, d.host, d.model) == (i, "signal", "SIGSEGV SEGV_ACCERR", "no signal")


def test_a_wrong_mapping_record_diverges() -> None:
    tr = copy.deepcopy(_load("python3"))
    i = _first(tr, lambda e: e["k"] == "sys" and e.get("maps"))
    tr.events[i]["maps"][-1][2] = "rwxp"
    res = replay(tr)
    assert res.divergences[0].index == i and res.divergences[0].what == "mapping"


def test_the_final_layout_is_compared() -> None:
    tr = copy.deepcopy(_load("python3"))
    tr.finals[0]["vmflags"][0] += " lo"
    res = replay(tr)
    assert res.layouts.agree == 0 and res.divergences[0].what == "layout"
    assert "VmFlags" in res.divergences[0].host


def test_what_is_not_modelled_is_named() -> None:
    tr = copy.deepcopy(_load("python3"))
    i = _first(tr, lambda e: e["k"] == "sys" and e["name"] == "mmap")
    lock = dict(tr.events[i], name="mlock", args=[0, 4096], ret=0)
    lock.pop("maps", None)
    tr.events.insert(i + 1, lock)
    guard = dict(tr.events[i], name="madvise", args=[0, 4096, 102], ret=0)
    guard.pop("maps", None)
    tr.events.insert(i + 1, guard)
    res = replay(tr)
    assert not res.agreed and not res.n_divergences
    names = " ".join(res.unsupported)
    assert "mlock" in names and "MADV_GUARD_INSTALL" in names


def test_interrupted_replay_is_partial() -> None:
    tr = _load("java")

    def stop(i: int) -> None:
        if i >= 2048:
            raise KeyboardInterrupt
    res = Replayer(tr).run(stop)
    assert res.partial and not res.agreed and 2048 <= res.events < len(tr.events)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "specfault.cli", "trace", *argv],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_replay(tmp_path) -> None:
    path = next(p for p in CORPUS if "mtmap" in p)
    out = _cli("replay", path, "--protocol", "pervma", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["agreed"] and res["agree"] == res["compared"] and res["protocol"] == "pervma"
    # a divergence: exit 1, the event printed
    tr = fmt.load(path)
    i = _first(tr, lambda e: e["k"] == "sys" and e["name"] == "munmap")
    tr.events[i]["ret"] = -22
    bad = str(tmp_path / "bad.trace.gz")
    fmt.save(tr, bad)
    out = _cli("replay", bad)
    assert out.returncode == 1 and "munmap(" in out.stdout and "-1 EINVAL" in out.stdout


@pytest.mark.parametrize("argv,what", [
    (["replay", "/nonexistent.trace.gz"], "no such file"),
    (["replay", __file__], "not gzip"),
    (["replay", "CORPUS", "--protocol", "clasic"], "did you mean classic"),
])
def test_cli_bad_input(argv: list[str], what: str) -> None:
    argv = [CORPUS[0] if a == "CORPUS" else a for a in argv]
    out = _cli(*argv)
    assert out.returncode == 2 and what in out.stderr and len(out.stderr.strip().splitlines()) == 1
