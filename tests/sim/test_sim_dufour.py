"""The simulator runs Dufour's SPF (protocol "dufour") beside the others."""

from __future__ import annotations

import json

from specfault.cli import main
from specfault.sim import run
from specfault.sim.bench import DEFAULT_PROTOCOLS, PROTOCOLS


def test_dufour_runs_and_reports_its_abort_rate() -> None:
    r = run("pft", "dufour", 4, faults=600)
    c = r.counters
    assert c["spf_attempt"] > 0 and c["spf_success"] > 0
    assert r.abort_rate == c["spf_abort"] / c["spf_attempt"]


def test_dufour_pays_the_vma_refcount_on_one_vma() -> None:
    """pft's threads share one VMA: Dufour's get_vma/put_vma bounce its
    refcount line like classic's mmap_lock count (the knob spf_vma_refcount
    on Lespinasse's SPF measures the same cost)."""
    spec = run("pft", "speculative", 8, faults=2000)
    duf = run("pft", "dufour", 8, faults=2000)
    assert duf.transfers_per_fault > 1.0 > spec.transfers_per_fault
    assert duf.faults_per_s < 0.75 * spec.faults_per_s


def test_bench_accepts_dufour_but_does_not_run_it_by_default(capsys) -> None:  # type: ignore[no-untyped-def]
    assert "dufour" in PROTOCOLS and "dufour" not in DEFAULT_PROTOCOLS
    assert main(["bench", "-w", "pft", "--cpus", "2", "--faults", "200", "--json",
                 "--protocols", "classic,speculative,pervma,dufour"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["protocol"] for r in out["runs"]] == ["classic", "speculative", "pervma", "dufour"]
    assert main(["bench", "--protocols", "lespinasse"]) == 2
