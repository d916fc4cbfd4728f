"""The performance simulator: the model's own fault paths, timed on a
simulated many-CPU machine (see docs/results.md).

    >>> from specfault import sim
    >>> cmp = sim.compare("pft", cpus=[1, 8], faults=2000)
    >>> cmp.ratio("speculative", 8) > 1
    True

``compare`` / ``run`` (sim.bench), ``CostProfile`` (sim.cost), the
workloads (sim.workloads.WORKLOADS), ``plots.plot_throughput`` /
``plots.plot_latency_cdf`` (sim.plots), ``calibrate`` (sim.calibrate).
"""

from specfault.sim.bench import PROTOCOLS, Comparison, compare, run
from specfault.sim.cost import CostProfile
from specfault.sim.engine import Engine, SimError
from specfault.sim.metrics import RunResult
from specfault.sim.workloads import WORKLOADS

__all__ = ["PROTOCOLS", "WORKLOADS", "Comparison", "CostProfile", "Engine", "RunResult", "SimError",
           "compare", "run"]
