"""Memory-manager race scenarios (``specfault check --list-scenarios``).

Each :class:`~specfault.check.scenarios.base.MmSpec` is instantiated per
protocol and mutant and registered with the explorer under
``mm.<name>@<protocol>[+<mutant>]``, so a printed schedule replays by name.
"""

from __future__ import annotations

from collections.abc import Callable

from specfault.check.scenario import Scenario, register
from specfault.check.scenarios.base import MmSpec
from specfault.check.scenarios.pressure import SPECS as PRESSURE_SPECS
from specfault.check.scenarios.races import SPECS as RACE_SPECS
from specfault.check.scenarios.tables import SPECS as TABLE_SPECS
from specfault.check.scenarios.thp import SPECS as THP_SPECS
from specfault.check.scenarios.truncation import SPECS as TRUNCATION_SPECS
from specfault.config import Config

#: every race: the mmap_lock writers' (races.py), reclaim's and swap-in's
#: (pressure.py), truncation's and hole punching's (truncation.py), PTE-table
#: reclaim's (tables.py), the huge-PMD writers' (thp.py: khugepaged's
#: collapse, a THP split)
SPECS = RACE_SPECS + PRESSURE_SPECS + TRUNCATION_SPECS + TABLE_SPECS + THP_SPECS
SPEC_BY_NAME = {s.name: s for s in SPECS}
PROTOCOLS = ("classic", "speculative", "pervma", "dufour")


def scenario_name(spec: str, protocol: str, mutant: str | None = None) -> str:
    return f"mm.{spec}@{protocol}" + (f"+{mutant}" if mutant else "")


def build(spec_name: str, protocol: str, mutant: str | None = None) -> Scenario:
    """The explorer scenario for ``spec_name`` under ``protocol`` (and a
    mutant's knobs)."""
    from specfault.check.mutants import MUTANTS

    spec = SPEC_BY_NAME[spec_name]
    config = Config(fault_protocol=protocol)
    if mutant is not None:
        config = config.with_(**MUTANTS[mutant].knobs)
    scen = spec.build(config)
    scen.name = scenario_name(spec_name, protocol, mutant)
    return scen


def _factory(spec: str, protocol: str, mutant: str | None) -> Callable[[], Scenario]:
    return lambda: build(spec, protocol, mutant)


def _register_all() -> None:
    from specfault.check.mutants import MUTANTS

    for spec in SPECS:
        for protocol in PROTOCOLS:
            register(scenario_name(spec.name, protocol), _factory(spec.name, protocol, None))
            for m in MUTANTS:
                register(scenario_name(spec.name, protocol, m), _factory(spec.name, protocol, m))


_register_all()

__all__ = ["PRESSURE_SPECS", "PROTOCOLS", "SPECS", "SPEC_BY_NAME", "TABLE_SPECS", "MmSpec",
           "build", "scenario_name"]
