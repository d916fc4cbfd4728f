"""The HTML reports in a real browser: headless Chromium (Debian's
package) driven by Playwright, the network off.  The page loads from a
file URL without attempting any other request, logs no console error,
every plot and swimlane has a rendered size, a copy button copies.  A
screenshot of each report is kept under the test's tmp dir.

Skipped, with the reason, where Playwright or Chromium is missing; under
CI (``CI=true``, where .ci/run installs both) that is a failure instead."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from specfault.cli import main
from specfault.report import tour

REGRESSIONS = Path(__file__).resolve().parent.parent / "regressions"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip() -> Any:
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("Playwright for Python is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        missing.append("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    if missing:
        why = "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    return sync_playwright


@pytest.fixture
def reports(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setattr(tour, "SIM_PLAN", [("app_launch", [2], 300), ("pft", [1, 4], 400)])
    out = tmp_path / "demo"
    assert main(["demo", "--only", "tour", "--only", "mutant", "--only", "sim", "--out", str(out), "--json"]) == 0
    bench = tmp_path / "bench.html"
    assert main(["bench", "-w", "pft", "--cpus", "1,4", "--faults", "600", "--html", str(bench), "--json"]) == 0
    check = tmp_path / "check.html"
    line = (REGRESSIONS / "no_seq2_check.schedule").read_text().strip()
    assert main(["check", "--replay", line, "--html", str(check), "--json"]) == 1
    capsys.readouterr()
    return [out / "report.html", bench, check]


def _check_page(browser: Any, path: Path, shot: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    attempted: list[str] = []

    def block(route: Any) -> None:
        attempted.append(route.request.url)
        route.abort()

    ctx.route(lambda url: not url.startswith("file:"), block)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load")
    sizes = page.eval_on_selector_all(
        "figure.plot svg, table.swimlane",
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [e.tagName, r.width, r.height]; })")
    want = {"report.html": 4 + 1, "bench.html": 2, "check.html": 1}[path.name]
    assert len(sizes) == want, sizes
    assert all(w > 0 and h > 0 for _, w, h in sizes), sizes
    # the embedded data is there and parses
    data = page.evaluate("JSON.parse(document.getElementById('specfault-data').textContent)")
    assert data == json.loads(page.locator("#specfault-data").text_content() or "null")
    # a copy button copies (Clipboard API or the execCommand fallback)
    button = page.locator("button.copy").first
    button.click()
    page.wait_for_function("b => b.textContent === 'copied'", arg=button.element_handle(), timeout=5000)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert errors == [], errors
    assert attempted == [], attempted
    ctx.close()


def test_reports_render_offline_in_chromium(reports: list[Path], tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            for path in reports:
                _check_page(browser, path, tmp_path / f"{path.stem}.png")
        finally:
            browser.close()
