"""The HTML reports (``--html`` on bench, check, demo): structure, every
figure equal to the ``--json`` figure of the same run, nothing online."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from specfault.cli import main
from specfault.report import tour

from .htmlcheck import check_figures, check_offline, parse

REGRESSIONS = Path(__file__).resolve().parent.parent / "regressions"


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(args)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_bench_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page_path = tmp_path / "b.html"
    code, data = run_json(["bench", "-w", "pft", "--cpus", "1,4", "--faults", "800", "--protocols",
                           "classic,speculative,pervma,dufour", "--html", str(page_path), "--json"], capsys)
    assert code == 0
    text = page_path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.data == data                      # the embedded data is the --json output
    n = check_figures(page, data)
    assert n >= 8 * 12                            # every run's row of the table
    assert {a["data-json"] for a, _ in page.figs} >= {f"runs/{i}/faults_per_s" for i in range(8)}
    assert page.count("figure", "plot") == 2 and page.count("svg") >= 2
    assert page.count("table", "data") >= 1
    (cmd,) = page.codes.values()
    assert cmd.startswith("specfault bench -w pft --cpus 1,4 --protocols classic,speculative,pervma,dufour")
    check_offline(text, page)


def test_check_replay_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = (REGRESSIONS / "no_seq2_check.schedule").read_text().strip()
    page_path = tmp_path / "r.html"
    code, data = run_json(["check", "--replay", line, "--html", str(page_path), "--json"], capsys)
    assert code == 1
    text = page_path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.data == data
    check_figures(page, data)
    (lane,) = page.swimlanes
    assert len(lane) == 1 + data["steps"]                     # header + one row per step
    assert lane[0][0] == "step" and lane[0][1].startswith("cpu0 [")
    classes = page.swimlane_classes[0]
    assert classes.count("fail") == 1 and classes.count("pre") == data["preemptions"]
    # cells in full: every step's op text appears untruncated
    cells = {c for row in lane[1:] for c in row[1:] if c}
    assert {t.split(": ", 1)[1] for t in data["trace"]} == cells
    # the replay command in full, with a copy button pointing at it
    assert f"specfault check --replay '{line}'" in page.codes.values()
    for tag, a in page.tags:
        if tag == "button":
            assert "copy" in a["class"] and a["data-for"] in page.codes
    check_offline(text, page)


def test_check_mutants_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page_path = tmp_path / "k.html"
    code, data = run_json(["check", "--mutants", "--mutant", "no_seq2_check", "--budget", "30",
                           "--html", str(page_path), "--json"], capsys)
    assert code == 0
    page = parse(page_path.read_text(encoding="utf-8"))
    assert page.data == data and check_figures(page, data) == 2
    assert len(page.swimlanes) == 1
    assert f"specfault check --replay '{data[0]['schedule']}'" in page.codes.values()


@pytest.fixture
def small_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's simulator part, smaller (the same code path)."""
    monkeypatch.setattr(tour, "SIM_PLAN", [("app_launch", [2], 300), ("pft", [1, 4], 400)])


def demo_page(tmp_path: Path, capsys: pytest.CaptureFixture[str], *only: str) -> tuple[Path, Any, str]:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--json"]
    for o in only:
        args += ["--only", o]
    code, data = run_json(args, capsys)
    assert code == 0
    path = out / "report.html"
    return path, data, path.read_text(encoding="utf-8")


def test_demo_html(tmp_path: Path, capsys: pytest.CaptureFixture[str], small_sim: None) -> None:
    path, data, text = demo_page(tmp_path, capsys, "tour", "mutant", "sim")
    page = parse(text)
    assert page.data == data
    n = check_figures(page, data)
    steps = len(data["tour"]["steps"])
    runs = sum(len(s["runs"]) for s in data["sim"])
    assert n == steps * 7 + 3 + 2 + runs * 7      # every figure of every table
    assert len(page.swimlanes) == 1                           # the mutant's counterexample
    assert page.count("figure", "plot") == 4                  # two per simulated workload
    assert "specfault demo" in page.codes.values()
    assert f"specfault check --replay '{data['mutant']['schedule']}'" in page.codes.values()
    assert page.count("dl", "legend") == 1
    check_offline(text, page)


def test_demo_prints_its_report_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    assert main(["demo", "--only", "tour", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed.replace("\n", "")
    assert "frame cells" in printed and "exclusive" in printed and "shared" in printed


def test_demo_refuses_an_unwritable_report_before_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["demo", "--only", "tour", "--out", str(blocker / "sub")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["demo", "--only", "tour", "--html", str(tmp_path / "missing" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
